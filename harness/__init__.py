"""migbench: a benchmark and evaluation harness for QEMU live migration."""
