//! The guest program: hand-assembled x86-64 code that runs at CPL 3 in 64-bit long mode, plus
//! the page tables, GDT and TSS the VMM builds for it.
//!
//! Guest-physical layout (identity-mapped with 2 MiB pages, every entry user-accessible):
//!
//! ```text
//!  0 ........................ ram_bytes      slot 0: RAM, dirty-logged; workload page p = GPA p*4096
//!  sys_base ... sys_base+2 MiB               slot 1: system region, dirty-logged too
//!     +0x00000 PML4   +0x01000 PDPT   +0x02000.. PDs (one per GiB up to the system region)
//!     +0x90000 GDT    +0x91000 code   +0x92000 control page   +0x93000 stack   +0x94000 TSS
//!     +0x100000 script ring: RING_ENTRIES × (deadline_tsc: u64, page_gpa: u64)
//! ```
//!
//! Two programs exist. The *workload* loop reads `(deadline, page)` entries that the VMM feeds
//! into the ring, spins on `rdtsc` until the deadline, writes its running write count into the
//! first 8 bytes of the page, and publishes progress in the control page. The *check* loop is
//! QEMU's migration-test trick: it increments byte 8 of every RAM page in turn, forever, so at any
//! instant all pages' bytes are equal except for one step.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

/// Guest page size (the only one supported).
pub const PAGE: u64 = 4096;
const TWO_MIB: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

pub const PML4_OFF: u64 = 0x0000;
pub const PDPT_OFF: u64 = 0x1000;
pub const PD_OFF: u64 = 0x2000;
/// Most page directories the system region has room for (RAM up to 64 GiB).
pub const MAX_PDS: u64 = 0x8e;
pub const GDT_OFF: u64 = 0x90000;
pub const CODE_OFF: u64 = 0x91000;
pub const CTRL_OFF: u64 = 0x92000;
pub const STACK_OFF: u64 = 0x93000;
pub const TSS_OFF: u64 = 0x94000;
pub const RING_OFF: u64 = 0x100000;
/// Entries in the script ring (16 bytes each: 1 MiB).
pub const RING_ENTRIES: u64 = 1 << 16;
/// Size of the system region.
pub const SYS_BYTES: u64 = TWO_MIB;

/// Control page fields (offsets within the control page).
pub mod ctrl {
    /// Incremented on every pass of the guest's main loop: the liveness counter.
    pub const HEARTBEAT: u64 = 0x00;
    /// Script entries the VMM has made available (written by the VMM).
    pub const PRODUCED: u64 = 0x08;
    /// Script entries the guest has carried out (= page writes done).
    pub const CONSUMED: u64 = 0x10;
    /// Completed sweeps of the check loop.
    pub const SWEEPS: u64 = 0x18;
    /// Set by the VMM to get the vCPU back promptly: the guest answers with an `out` (an exit).
    pub const PAUSE_REQ: u64 = 0x20;
}

/// Offset within each RAM page of the byte the check loop increments.
pub const CHECK_BYTE: u64 = 8;

/// Which program the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    /// Dirty pages as the scenario's workload says, paced by the VMM-fed script.
    Workload,
    /// Increment one byte in every page in a loop (consistency check).
    Check,
}

impl GuestMode {
    pub fn as_u8(self) -> u8 {
        match self {
            GuestMode::Workload => 0,
            GuestMode::Check => 1,
        }
    }
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(GuestMode::Workload),
            1 => Some(GuestMode::Check),
            _ => None,
        }
    }
}

/// Where everything lives for a guest with `ram_bytes` of RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub ram_bytes: u64,
    pub sys_base: u64,
}

impl Layout {
    /// The system region sits at the first GiB boundary at or above the end of RAM.
    pub fn new(ram_bytes: u64) -> Option<Layout> {
        if ram_bytes == 0 || !ram_bytes.is_multiple_of(PAGE) {
            return None;
        }
        let sys_base = ram_bytes.div_ceil(GIB) * GIB;
        if sys_base / GIB + 1 > MAX_PDS {
            return None;
        }
        Some(Layout {
            ram_bytes,
            sys_base,
        })
    }
    pub fn ram_pages(&self) -> u64 {
        self.ram_bytes / PAGE
    }
    pub fn sys_pages(&self) -> u64 {
        SYS_BYTES / PAGE
    }
    /// Guest-virtual (= guest-physical) address of a system-region offset.
    pub fn sys_va(&self, off: u64) -> u64 {
        self.sys_base + off
    }
}

/// The workload loop. Registers on entry: rbx = control page, rsi = ring base, r15 = entries
/// consumed so far (0 at start).
///
/// ```text
/// 00 top:   48 FF 43 00       inc  qword [rbx+HEARTBEAT]
/// 04        80 7B 20 00       cmp  byte [rbx+PAUSE_REQ], 0
/// 08        75 37             jne  pause               ; the VMM wants the vCPU back
/// 0a        48 8B 43 08       mov  rax, [rbx+PRODUCED]
/// 0e        49 39 C7          cmp  r15, rax
/// 11        73 ED             jae  top                 ; nothing to do yet
/// 13        4C 89 F9          mov  rcx, r15
/// 16        81 E1 mask32      and  ecx, RING_ENTRIES-1
/// 1c        48 C1 E1 04       shl  rcx, 4              ; 16-byte entries
/// 20        48 01 F1          add  rcx, rsi            ; rcx = &ring[i]
/// 23        0F 31             rdtsc
/// 25        48 C1 E2 20       shl  rdx, 32
/// 29        48 09 D0          or   rax, rdx            ; rax = TSC
/// 2c        48 3B 01          cmp  rax, [rcx]          ; deadline reached?
/// 2f        72 CF             jb   top
/// 31        4C 8B 49 08       mov  r9, [rcx+8]         ; page address
/// 35        49 FF C7          inc  r15
/// 38        4D 89 39          mov  [r9], r15           ; write the running count into the page
/// 3b        4C 89 7B 10       mov  [rbx+CONSUMED], r15
/// 3f        EB BF             jmp  top
/// 41 pause: E6 80             out  0x80, al            ; exits to the VMM (IOPL 3 allows it)
/// 43        EB BB             jmp  top
/// ```
pub fn workload_code() -> Vec<u8> {
    let mask = ((RING_ENTRIES - 1) as u32).to_le_bytes();
    let mut c = vec![
        0x48,
        0xFF,
        0x43,
        ctrl::HEARTBEAT as u8, // inc qword [rbx+HEARTBEAT]
        0x80,
        0x7B,
        ctrl::PAUSE_REQ as u8,
        0x00, // cmp byte [rbx+PAUSE_REQ], 0
        0x75,
        0x37, // jne pause
        0x48,
        0x8B,
        0x43,
        ctrl::PRODUCED as u8, // mov rax, [rbx+PRODUCED]
        0x49,
        0x39,
        0xC7, // cmp r15, rax
        0x73,
        0xED, // jae top
        0x4C,
        0x89,
        0xF9, // mov rcx, r15
        0x81,
        0xE1, // and ecx, imm32
    ];
    c.extend_from_slice(&mask);
    c.extend_from_slice(&[
        0x48,
        0xC1,
        0xE1,
        0x04, // shl rcx, 4
        0x48,
        0x01,
        0xF1, // add rcx, rsi
        0x0F,
        0x31, // rdtsc
        0x48,
        0xC1,
        0xE2,
        0x20, // shl rdx, 32
        0x48,
        0x09,
        0xD0, // or rax, rdx
        0x48,
        0x3B,
        0x01, // cmp rax, [rcx]
        0x72,
        0xCF, // jb top
        0x4C,
        0x8B,
        0x49,
        0x08, // mov r9, [rcx+8]
        0x49,
        0xFF,
        0xC7, // inc r15
        0x4D,
        0x89,
        0x39, // mov [r9], r15
        0x4C,
        0x89,
        0x7B,
        ctrl::CONSUMED as u8, // mov [rbx+CONSUMED], r15
        0xEB,
        0xBF, // jmp top
        0xE6,
        0x80, // pause: out 0x80, al
        0xEB,
        0xBB, // jmp top
    ]);
    debug_assert_eq!(c.len(), 0x45);
    c
}

/// The check loop. Registers on entry: rbx = control page, r12 = RAM pages, rdi = 0.
///
/// ```text
/// 00 outer: 31 FF            xor  edi, edi
/// 02 inner: 80 7B 20 00      cmp  byte [rbx+PAUSE_REQ], 0
/// 06        75 1C            jne  pause
/// 08        48 89 F8         mov  rax, rdi
/// 0b        48 C1 E0 0C      shl  rax, 12             ; page address (RAM starts at 0)
/// 0f        FE 40 08         inc  byte [rax+CHECK_BYTE]
/// 12        48 FF 43 00      inc  qword [rbx+HEARTBEAT]
/// 16        48 FF C7         inc  rdi
/// 19        4C 39 E7         cmp  rdi, r12
/// 1c        72 E4            jb   inner
/// 1e        48 FF 43 18      inc  qword [rbx+SWEEPS]
/// 22        EB DC            jmp  outer
/// 24 pause: E6 80            out  0x80, al
/// 26        EB DA            jmp  inner
/// ```
pub fn check_code() -> Vec<u8> {
    let c = vec![
        0x31,
        0xFF, // xor edi, edi
        0x80,
        0x7B,
        ctrl::PAUSE_REQ as u8,
        0x00, // cmp byte [rbx+PAUSE_REQ], 0
        0x75,
        0x1C, // jne pause
        0x48,
        0x89,
        0xF8, // mov rax, rdi
        0x48,
        0xC1,
        0xE0,
        0x0C, // shl rax, 12
        0xFE,
        0x40,
        CHECK_BYTE as u8, // inc byte [rax+8]
        0x48,
        0xFF,
        0x43,
        ctrl::HEARTBEAT as u8, // inc qword [rbx+HEARTBEAT]
        0x48,
        0xFF,
        0xC7, // inc rdi
        0x4C,
        0x39,
        0xE7, // cmp rdi, r12
        0x72,
        0xE4, // jb inner
        0x48,
        0xFF,
        0x43,
        ctrl::SWEEPS as u8, // inc qword [rbx+SWEEPS]
        0xEB,
        0xDC, // jmp outer
        0xE6,
        0x80, // pause: out 0x80, al
        0xEB,
        0xDA, // jmp inner
    ];
    debug_assert_eq!(c.len(), 0x28);
    c
}

/// Page-table entry bits.
const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;

/// Write page tables, GDT, TSS and code into the system region (`sys` is its host view, length
/// [`SYS_BYTES`]).
pub fn build_system(layout: &Layout, mode: GuestMode, sys: &mut [u8]) {
    let put = |buf: &mut [u8], off: u64, v: u64| {
        let o = off as usize;
        buf[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    let sb = layout.sys_base;
    // PML4[0] -> PDPT.
    put(sys, PML4_OFF, (sb + PDPT_OFF) | P | RW | US);
    // One PD per GiB from 0 through the system region's GiB, all 2 MiB pages, identity-mapped.
    let gibs = sb / GIB + 1;
    for g in 0..gibs {
        let pd = PD_OFF + g * PAGE;
        put(sys, PDPT_OFF + g * 8, (sb + pd) | P | RW | US);
        for e in 0..512 {
            let addr = g * GIB + e * TWO_MIB;
            let in_ram = addr < layout.ram_bytes;
            let in_sys = addr >= sb && addr < sb + SYS_BYTES;
            if in_ram || in_sys {
                put(sys, pd + e * 8, addr | P | RW | US | PS);
            }
        }
    }
    // GDT: null, kernel code, kernel data, user data (0x18), user code (0x20), TSS (0x28, 16 B).
    let gdt = [
        0u64,
        0x00AF_9B00_0000_FFFF, // 0x08 code64 DPL0
        0x00CF_9300_0000_FFFF, // 0x10 data DPL0
        0x00CF_F300_0000_FFFF, // 0x18 data DPL3
        0x00AF_FB00_0000_FFFF, // 0x20 code64 DPL3
    ];
    for (i, d) in gdt.iter().enumerate() {
        put(sys, GDT_OFF + i as u64 * 8, *d);
    }
    let tss = sb + TSS_OFF;
    let limit = 0x67u64;
    let low = (limit & 0xFFFF)
        | ((tss & 0xFF_FFFF) << 16)
        | (0x8B << 40) // present, busy 64-bit TSS
        | (((tss >> 24) & 0xFF) << 56);
    put(sys, GDT_OFF + 0x28, low);
    put(sys, GDT_OFF + 0x30, tss >> 32);
    let code = match mode {
        GuestMode::Workload => workload_code(),
        GuestMode::Check => check_code(),
    };
    let c = CODE_OFF as usize;
    sys[c..c + code.len()].copy_from_slice(&code);
}

fn seg(selector: u16, type_: u8, l: u8, db: u8, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Special registers for entering the program directly at CPL 3 in long mode.
pub fn entry_sregs(layout: &Layout, mut sregs: kvm_sregs) -> kvm_sregs {
    let sb = layout.sys_base;
    let code = seg(0x23, 0xB, 1, 0, 3);
    let data = seg(0x1B, 0x3, 0, 1, 3);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: sb + TSS_OFF,
        limit: 0x67,
        selector: 0x28,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment {
        selector: 0,
        type_: 0x2,
        present: 0,
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = sb + GDT_OFF;
    sregs.gdt.limit = 0x37;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr3 = sb + PML4_OFF;
    // PAE, OSFXSR, OSXMMEXCPT.
    sregs.cr4 = 0x20 | 0x200 | 0x400;
    // PE, MP, ET, NE, WP, PG.
    sregs.cr0 = 0x1 | 0x2 | 0x10 | 0x20 | 0x1_0000 | 0x8000_0000;
    // LME | LMA.
    sregs.efer = 0x100 | 0x400;
    sregs
}

/// General registers at entry: RIP at the code, IOPL 3 (RFLAGS 0x3002), the loop's inputs.
pub fn entry_regs(layout: &Layout, mode: GuestMode) -> kvm_regs {
    let mut r = kvm_regs {
        rip: layout.sys_va(CODE_OFF),
        rsp: layout.sys_va(STACK_OFF + PAGE - 16),
        rflags: 0x3002,
        rbx: layout.sys_va(CTRL_OFF),
        ..Default::default()
    };
    match mode {
        GuestMode::Workload => {
            r.rsi = layout.sys_va(RING_OFF);
            r.r15 = 0;
        }
        GuestMode::Check => {
            r.r12 = layout.ram_pages();
            r.rdi = 0;
        }
    }
    r
}

/// QEMU's consistency rule over the check bytes of every page: going up the pages, the byte may
/// drop by exactly one (mod 256) at most once, and must otherwise stay equal. Returns a
/// description of the first violation.
pub fn check_steps(bytes: &[u8]) -> Result<(), String> {
    let mut steps = Vec::new();
    for i in 1..bytes.len() {
        let (a, b) = (bytes[i - 1], bytes[i]);
        if a != b {
            if a != b.wrapping_add(1) {
                return Err(format!(
                    "page {i}: byte {b} after {a} in page {} (expected {a} or {})",
                    i - 1,
                    a.wrapping_sub(1)
                ));
            }
            steps.push(i);
        }
    }
    // The wrap from the last page back to the first is a step too when a sweep is in progress;
    // with all pages touched the same number of times there is none.
    if steps.len() > 1 {
        return Err(format!(
            "{} steps at pages {:?} (at most one allowed)",
            steps.len(),
            &steps[..steps.len().min(8)]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sizes_and_branch_targets() {
        let w = workload_code();
        assert_eq!(w.len(), 0x45);
        let target = |c: &[u8], at: usize| at as i64 + 2 + (c[at + 1] as i8 as i64);
        assert_eq!(target(&w, 0x08), 0x41);
        for at in [0x11, 0x2f, 0x3f, 0x43] {
            assert_eq!(target(&w, at), 0, "branch at {at:#x}");
        }
        let c = check_code();
        assert_eq!(c.len(), 0x28);
        assert_eq!(target(&c, 0x06), 0x24);
        assert_eq!(target(&c, 0x1c), 0x02);
        assert_eq!(target(&c, 0x22), 0x00);
        assert_eq!(target(&c, 0x26), 0x02);
    }

    #[test]
    fn layout_places_system_region_on_a_gib_boundary() {
        let l = Layout::new(64 << 20).unwrap();
        assert_eq!(l.sys_base, 1 << 30);
        let l = Layout::new(1 << 30).unwrap();
        assert_eq!(l.sys_base, 1 << 30);
        assert!(Layout::new(0).is_none());
        assert!(Layout::new(4097).is_none());
        assert!(Layout::new(200 << 30).is_none());
    }

    #[test]
    fn step_check() {
        assert!(check_steps(&[5, 5, 5, 5]).is_ok());
        assert!(check_steps(&[6, 6, 5, 5]).is_ok());
        assert!(check_steps(&[0, 255, 255]).is_ok());
        assert!(check_steps(&[6, 5, 6, 5]).is_err());
        assert!(check_steps(&[7, 5, 5]).is_err());
        assert!(check_steps(&[5, 6]).is_err());
    }
}
