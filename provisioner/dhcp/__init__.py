"""What the site's DHCP must tell our hosts, and the ProxyDHCP that tells them itself (docs/dhcp.md).

- plan: the one answer for every format: next-server, the boot file per client architecture, our hosts' MACs.
- kea, isc, dnsmasq, windows: that plan written for each DHCP server (checked by its own config checker in tests).
- proxy: dnsmasq in proxy mode next to `serve` (`serve --proxy-dhcp`): its config, hosts file and the child process.
"""
