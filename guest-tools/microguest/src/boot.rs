//! PVH entry: 32-bit protected mode to 64-bit CPL3 in a few dozen instructions.
//!
//! Guest code at CPL0 is emulated instruction by instruction on the PVM KVM of
//! our build machines (~1.4 M instructions/s), so everything that can be done
//! ahead of time is: the page tables (identity map of the first 4 GiB with
//! 2 MiB pages, U bit set) and the GDT are static data in the image. The stub
//! only loads them, turns on PAE/long mode/paging and SSE, and `iretq`s to
//! CPL3 with IOPL=3 so the Rust code can use port I/O directly.
//!
//! There is no IDT: the microguest never enables interrupts (it polls), and
//! any exception at CPL3 becomes a triple fault, which the VMM reports as a
//! guest shutdown with the vCPU registers.
//!
//! Entry state (PVH ABI): 32-bit protected mode, paging off, `ebx` = guest
//! physical address of `hvm_start_info`.
//!
//! Every vCPU enters here: the VMM starts each application processor (AP)
//! in the same PVH state as the boot processor (no INIT/SIPI trampoline,
//! whose real mode this KVM would emulate slowly). The stub tells them
//! apart by the initial APIC id (CPUID leaf 1, EBX[31:24]), which the VMM
//! sets to the vCPU's index: CPU 0 goes to `microguest_main` on the main
//! stack, CPU n to `microguest_ap_main` on its own stack (`smp.rs`). An id
//! of `smp::MAX_CPUS` or more ends the VM with the guest-error status.

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4            /* namesz: "Xen\0" */
    .long 4            /* descsz: 32-bit entry address */
    .long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    /* esi: hvm_start_info; ebp: this CPU's index (initial APIC id) */
    mov %ebx, %esi
    mov $1, %eax
    cpuid
    shr $24, %ebx
    cmp ${max_cpus}, %ebx
    jae too_many_cpus
    mov %ebx, %ebp
    /* a 64-byte boot stack per CPU: only the iretq frame lives on it */
    mov %ebp, %eax
    inc %eax
    shl $6, %eax
    add $boot_stacks, %eax
    mov %eax, %esp
    lgdt gdt_ptr
    /* CR4: PAE (5) | OSFXSR (9) | OSXMMEXCPT (10) */
    mov $0x620, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    /* EFER.LME */
    mov $0xC0000080, %ecx
    mov $0x100, %eax
    xor %edx, %edx
    wrmsr
    /* CR0: PG (31) | NE (5) | MP (1) | PE (0); EM clear so SSE works */
    mov $0x80000023, %eax
    mov %eax, %cr0
    ljmp $0x08, $start64

    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* hvm_start_info address and the CPU index become the arguments */
    mov %esi, %edi
    mov %ebp, %esi
    /* iretq frame to CPL3: SS, RSP, RFLAGS (IOPL=3, IF=0), CS, RIP */
    pushq $0x23
    test %ebp, %ebp
    jnz 1f
    mov $user_stack_top - 8, %rax
    push %rax
    pushq $0x3002
    pushq $0x1b
    mov $microguest_main, %rax
    push %rax
    iretq
1:  /* AP n: the top of the n-th AP stack */
    mov %rbp, %rax
    shl ${ap_stack_shift}, %rax
    add $ap_stacks - 8, %rax
    push %rax
    pushq $0x3002
    pushq $0x1b
    mov $microguest_ap_main, %rax
    push %rax
    iretq

    .code32
too_many_cpus:
    mov ${guest_error}, %eax
    mov ${exit_port}, %dx
    out %eax, %dx
2:  jmp 2b
    .code64

    .section .rodata
    .balign 16
gdt:
    .quad 0                      /* 0x00 null */
    .quad 0x00af9a000000ffff     /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff     /* 0x10 kernel data */
    .quad 0x00affa000000ffff     /* 0x18 user code, 64-bit, DPL3 */
    .quad 0x00cff2000000ffff     /* 0x20 user data, DPL3 */
gdt_end:
    .balign 4
    .word 0
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .section .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + 0x7
    .quad pd + 0x1000 + 0x7
    .quad pd + 0x2000 + 0x7
    .quad pd + 0x3000 + 0x7
    .fill 508, 8, 0
pd:
    .set addr, 0
    .rept 2048
    .quad addr + 0x87            /* present, writable, user, 2 MiB page */
    .set addr, addr + 0x200000
    .endr

    .section .bss
    .balign 16
boot_stacks:
    .skip 64 * {max_cpus}
    .balign 4096
user_stack:
    .skip 0x40000
user_stack_top:
    /* AP n's stack is [ap_stacks + (n-1) << shift, ap_stacks + n << shift) */
ap_stacks:
    .skip (({max_cpus} - 1) << {ap_stack_shift})

    .section .text
"#,
    max_cpus = const crate::smp::MAX_CPUS,
    ap_stack_shift = const crate::smp::AP_STACK_SHIFT,
    guest_error = const crate::EXIT_GUEST_ERROR,
    exit_port = const crate::io::EXIT_PORT,
    options(att_syntax)
);
