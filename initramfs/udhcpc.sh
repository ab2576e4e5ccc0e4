#!/bin/sh
# busybox udhcpc event script of the litefs initramfs: put the leased address, route and DNS
# servers on the interface (udhcpc passes them in the environment).
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ;;
    bound | renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        if [ -n "${router:-}" ]; then
            for r in $router; do
                ip route replace default via "$r" dev "$interface" && break
            done
        fi
        : >/etc/resolv.conf
        [ -n "${domain:-}" ] && echo "search $domain" >>/etc/resolv.conf
        for d in ${dns:-}; do echo "nameserver $d" >>/etc/resolv.conf; done
        ;;
esac
exit 0
