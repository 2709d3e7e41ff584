"""Hosts: the machines that run QEMU, and everything that differs between local and SSH.

Where it stands: under the run stage, which uses hosts only through :class:`hosts.host.Host`::

    plan -> [hosts] -> run -> results -> analysis -> report

``host`` is the one Host interface (LocalHost, SshHost: processes, commands a stop can cut
short, files, sockets, the CPU sampler's stream, paths); ``remote`` tunnels unix sockets over
SSH; ``placement`` puts the guest image on a host; ``probe`` asks a QEMU build what it supports;
``provision`` is doctor and provision (checks and installs); ``netsetup`` builds the VM
networks (bridges, taps); ``testbed`` makes two namespace hosts with sshd; ``hostsfile`` is
``migbench init`` (a hosts file for this machine). No module outside this package branches on
the transport (tests/unit/test_layout.py checks it).

May import: errors, inputs, output, digest, locations; plan, guest.
"""
