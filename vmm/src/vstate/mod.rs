//! KVM state of a machine: the VM (memory slots, irqchip, PIT) and its vCPUs.
pub mod persist;
pub mod vcpu;
pub mod vm;
