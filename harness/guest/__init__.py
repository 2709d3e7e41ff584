"""Guest: what boots inside the VMs, built on this machine.

Where it stands: beside the flow, below the hosts and run stages that place and boot it::

    plan -> [guest] image -> hosts (placed on each host) -> run (booted by every VM)

``image`` builds the kernel + initramfs + workloads, content-hashed and cached; ``debian``
builds the Debian guest (a qcow2 root disk with the services, and its stage-1 initrd);
``buildlog`` is how a build reports progress; ``workloads/`` holds the guest sources (package
data; in a checkout a link to the top-level ``workloads/``). It reads and writes local files
and downloads packages; it never reaches a host.

May import: errors, inputs, output, digest, locations; plan.
"""
