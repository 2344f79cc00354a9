//! Leaving a machine at process exit without waiting on KVM's teardown.
use super::Machine;

impl Machine {
    /// Ends the machine of a process about to exit (`vmm run`, `vmm
    /// restore`): vCPUs, devices, the recorder, snapshots and lazy-restore
    /// threads are released now, in the usual order; the VM and guest
    /// memory go to a reaper ([`crate::teardown`]) so that the exit does
    /// not wait on KVM's teardown. Only then: nothing handed over is freed
    /// until the process exits.
    pub fn release_for_exit(self) {
        use std::os::fd::AsRawFd;
        let Machine {
            vcpus,
            serial,
            virtio,
            recorder,
            snapshots,
            vm,
            shared,
            lazy,
            mem,
            ..
        } = self;
        drop((vcpus, serial, virtio, recorder, snapshots));
        // No vCPU runs any more: the lazy restore's threads may stop
        // before the VM is gone.
        drop(lazy);
        let fd = vm.fd().as_raw_fd();
        crate::teardown::release_after_exit(fd, (vm, shared, mem));
    }
}
