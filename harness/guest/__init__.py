"""Guest: what boots inside the VMs, built on this machine.

Where it stands: beside the flow, below the hosts and run stages that place and boot it::

    plan -> [guest] image -> hosts (placed on each host) -> run (booted by every VM)

``image`` builds the kernel + initramfs + workloads, content-hashed and cached. It reads and
writes local files and downloads packages; it never reaches a host.

May import: errors, inputs, output, digest; plan.
"""
