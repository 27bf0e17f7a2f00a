//! The KVM VM: memory slots (with dirty logging on the source), in-kernel irqchip, clock.

use super::memory::{GuestRegion, MemoryError};
use super::vcpu::{Vcpu, VcpuError};
use crate::guest::{Layout, SYS_BYTES};
use kvm_bindings::{
    kvm_clear_dirty_log, kvm_clock_data, kvm_enable_cap, kvm_irqchip, kvm_userspace_memory_region,
    CpuId, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
    KVM_MEM_LOG_DIRTY_PAGES,
};
use kvm_ioctls::{Kvm, VmFd};
use std::os::unix::io::AsRawFd;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("guest memory of {0} bytes is not supported (page-aligned, up to 63 GiB)")]
    BadSize(u64),
    #[error("KVM call {0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

fn kerr(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |e| VmError::Kvm(what, e)
}

// KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log); kvm-ioctls 0.19 lacks it.
use vmm_sys_util::{ioctl_ioc_nr, ioctl_iowr_nr};
ioctl_iowr_nr!(
    KVM_CLEAR_DIRTY_LOG,
    kvm_bindings::KVMIO,
    0xc0,
    kvm_clear_dirty_log
);

/// Slot numbers.
pub const RAM_SLOT: u32 = 0;
pub const SYS_SLOT: u32 = 1;

/// VM-wide state KVM keeps outside the vCPUs.
#[derive(Clone, Copy)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub clock: kvm_clock_data,
}

pub struct Vm {
    // Field order matters for drop: the VM fd closes before the memory is unmapped.
    fd: VmFd,
    kvm: Kvm,
    pub layout: Layout,
    pub ram: GuestRegion,
    pub sys: GuestRegion,
    dirty_log: bool,
    manual_protect: bool,
    cpuid: CpuId,
}

impl Vm {
    /// Create a VM with RAM and the system region mapped; `dirty_log` turns on dirty logging
    /// for both slots (using manual protect when KVM offers it, so a harvest re-protects only
    /// the pages it found dirty).
    pub fn new(layout: Layout, dirty_log: bool) -> Result<Vm, VmError> {
        Self::build(layout, dirty_log, false)
    }

    /// A destination VM: no dirty logging, memory faulted in up front so that receiving pages
    /// does not take a page fault each.
    pub fn new_populated(layout: Layout) -> Result<Vm, VmError> {
        Self::build(layout, false, true)
    }

    fn build(layout: Layout, dirty_log: bool, populate: bool) -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(kerr("KVM_CREATE_VM"))?;
        let mut manual_protect = false;
        if dirty_log
            && kvm.check_extension_raw(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 as libc::c_ulong) != 0
        {
            let cap = kvm_enable_cap {
                cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                args: [KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE as u64, 0, 0, 0],
                ..Default::default()
            };
            manual_protect = fd.enable_cap(&cap).is_ok();
        }
        fd.set_tss_address(0xfffb_d000)
            .map_err(kerr("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip().map_err(kerr("KVM_CREATE_IRQCHIP"))?;
        let ram = GuestRegion::new(0, layout.ram_bytes, populate)?;
        // The system region is always faulted in (written) up front. The VMM writes it while
        // the guest runs (the script ring); if a page still mapped the shared zero page when
        // the VMM first wrote it, the copy-on-write would have to reach KVM's mapping through
        // an MMU notifier, and this host's nested KVM was seen to keep serving the guest the
        // stale zero page (the guest then read empty script entries).
        let sys = GuestRegion::new(layout.sys_base, SYS_BYTES, true)?;
        let flags = if dirty_log {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        for (slot, r) in [(RAM_SLOT, &ram), (SYS_SLOT, &sys)] {
            let region = kvm_userspace_memory_region {
                slot,
                flags,
                guest_phys_addr: r.gpa(),
                memory_size: r.len(),
                userspace_addr: r.host_addr(),
            };
            // SAFETY: the region's mapping lives as long as `Vm` (fields drop after `fd`), is
            // page-aligned and covers `memory_size` bytes; slots do not overlap.
            unsafe { fd.set_user_memory_region(region) }
                .map_err(kerr("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kerr("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(Vm {
            fd,
            kvm,
            layout,
            ram,
            sys,
            dirty_log,
            manual_protect,
            cpuid,
        })
    }

    pub fn manual_protect(&self) -> bool {
        self.manual_protect
    }

    pub fn create_vcpu(&self, id: u64) -> Result<Vcpu, VmError> {
        let fd = self.fd.create_vcpu(id).map_err(kerr("KVM_CREATE_VCPU"))?;
        let v = Vcpu::new(fd, id, &self.kvm)?;
        v.set_cpuid(&self.cpuid)?;
        Ok(v)
    }

    /// Harvest the dirty log of `slot`: the pages written since the last harvest. With manual
    /// protect, exactly the returned pages are re-protected.
    pub fn harvest(&self, slot: u32) -> Result<Vec<u64>, VmError> {
        self.dirty_log(slot, true)
    }

    /// Read the dirty log of `slot`. With manual protect and `clear == false` this is a peek:
    /// the bits stay set and nothing is re-protected. Without manual protect KVM always clears,
    /// so callers must accumulate what they read.
    pub fn dirty_log(&self, slot: u32, clear: bool) -> Result<Vec<u64>, VmError> {
        let region = if slot == RAM_SLOT {
            &self.ram
        } else {
            &self.sys
        };
        if !self.dirty_log {
            return Ok(vec![0; region.pages().div_ceil(64) as usize]);
        }
        let bits = self
            .fd
            .get_dirty_log(slot, region.len() as usize)
            .map_err(kerr("KVM_GET_DIRTY_LOG"))?;
        if clear && self.manual_protect && bits.iter().any(|&w| w != 0) {
            let mut clear = kvm_clear_dirty_log {
                slot,
                num_pages: region.pages() as u32,
                first_page: 0,
                ..Default::default()
            };
            clear.__bindgen_anon_1.dirty_bitmap = bits.as_ptr() as *mut libc::c_void;
            // SAFETY: `clear` points at a bitmap covering `num_pages` bits of this slot that
            // stays alive for the call; the ioctl only reads it.
            let r = unsafe {
                vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_CLEAR_DIRTY_LOG(), &clear)
            };
            if r < 0 {
                return Err(VmError::Kvm(
                    "KVM_CLEAR_DIRTY_LOG",
                    kvm_ioctls::Error::last(),
                ));
            }
        }
        Ok(bits)
    }

    pub fn save_state(&self) -> Result<VmState, VmError> {
        let chip = |id| -> Result<kvm_irqchip, VmError> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut c)
                .map_err(kerr("KVM_GET_IRQCHIP"))?;
            Ok(c)
        };
        Ok(VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            clock: self.fd.get_clock().map_err(kerr("KVM_GET_CLOCK"))?,
        })
    }

    pub fn restore_state(&self, s: &VmState) -> Result<(), VmError> {
        for c in [&s.pic_master, &s.pic_slave, &s.ioapic] {
            self.fd.set_irqchip(c).map_err(kerr("KVM_SET_IRQCHIP"))?;
        }
        let mut clock = s.clock;
        // Only the clock value is meaningful to set; flags from GET describe the source host.
        clock.flags = 0;
        self.fd.set_clock(&clock).map_err(kerr("KVM_SET_CLOCK"))?;
        Ok(())
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
