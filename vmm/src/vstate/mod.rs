//! KVM state of a machine: the VM (memory slots, irqchip, PIT) and its vCPUs.
pub mod vcpu;
pub mod vm;
