#!/bin/sh
# busybox udhcpc event script of the litefs initramfs: put the leased address, route and DNS
# servers on the interface (udhcpc passes them in the environment). LITEFS_RESOLV: where the
# DNS servers go (default /etc/resolv.conf; the tests point it elsewhere).
RESOLV=${LITEFS_RESOLV:-/etc/resolv.conf}
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
        # Whatever answers DHCP writes these: only names and addresses reach resolv.conf.
        : >"$RESOLV"
        case "${domain:-}" in
            '' | *[!A-Za-z0-9.-]*) ;;
            *) echo "search $domain" >>"$RESOLV" ;;
        esac
        for d in ${dns:-}; do
            case "$d" in *[!0-9a-fA-F.:]*) continue ;; esac
            echo "nameserver $d" >>"$RESOLV"
        done
        ;;
esac
exit 0
