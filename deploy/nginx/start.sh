#!/bin/sh
# Start nginx with the resolver the container engine gave this container: Docker's embedded DNS
# (127.0.0.11) or podman's aardvark-dns (the network's gateway), read from /etc/resolv.conf.
# nginx cannot read resolv.conf itself, and it resolves ml-api and ml-client on each request
# (proxy_pass with a variable, http.conf) so that recreated or scaled containers are found.
set -eu
ns=
while read -r key value _; do
  if [ "$key" = nameserver ]; then ns=$value; break; fi
done < /etc/resolv.conf
case $ns in
  "") echo "start.sh: no nameserver in /etc/resolv.conf" >&2; exit 1 ;;
  *:*) ns="[$ns]" ;;
esac
echo "resolver $ns valid=10s ipv6=off;" > /tmp/resolver.conf
exec nginx -g 'daemon off;'
