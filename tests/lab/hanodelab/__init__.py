"""The hanode two-node lab: a Debian guest image, two qemu VMs on bridges inside a network
namespace, a qemu-guest-agent client, provisioning, and the orchestration behind labctl."""
