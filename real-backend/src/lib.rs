//! migsim's real backend: a tiny KVM VMM that live-migrates its own guest between two processes
//! and measures the blackout.

pub mod guest;
pub mod vstate;

#[cfg(test)]
mod spike {
    use crate::guest::*;
    use crate::vstate::Vm;

    #[test]
    fn guest_runs_at_cpl3() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("SKIPPED: /dev/kvm not available");
            return;
        }
        let layout = Layout::new(8 << 20).unwrap();
        let vm = Vm::new(layout, true).unwrap();
        // SAFETY: no vCPU exists yet.
        build_system(&layout, GuestMode::Check, unsafe {
            vm.sys.as_mut_slice_unshared()
        });
        let v = vm.create_vcpu(0).unwrap();
        let s = v.fd.get_sregs().unwrap();
        v.fd.set_sregs(&entry_sregs(&layout, s)).unwrap();
        v.fd.set_regs(&entry_regs(&layout, GuestMode::Check))
            .unwrap();
        let _ = vm.harvest(0).unwrap();
        let r = v.start();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (v, res) = r.stop().unwrap();
        eprintln!("exit: {res:?}");
        let hb = vm.sys.read_u64(CTRL_OFF + ctrl::HEARTBEAT);
        let sw = vm.sys.read_u64(CTRL_OFF + ctrl::SWEEPS);
        let d = vm.harvest(0).unwrap();
        let n: u32 = d.iter().map(|w| w.count_ones()).sum();
        eprintln!(
            "heartbeat {hb} sweeps {sw} dirty {n} rip {:x}",
            v.fd.get_regs().unwrap().rip
        );
        let st = v.save().unwrap();
        eprintln!("msrs {}", st.msrs.len());
        assert!(hb > 0);
    }
}
