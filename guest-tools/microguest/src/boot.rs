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
    mov $boot_stack_top, %esp
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
    /* hvm_start_info address becomes the first argument */
    mov %ebx, %edi
    /* iretq frame to CPL3: SS, RSP, RFLAGS (IOPL=3, IF=0), CS, RIP */
    pushq $0x23
    mov $user_stack_top - 8, %rax
    push %rax
    pushq $0x3002
    pushq $0x1b
    mov $microguest_main, %rax
    push %rax
    iretq

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
boot_stack:
    .skip 256
boot_stack_top:
    .balign 4096
user_stack:
    .skip 0x40000
user_stack_top:

    .section .text
"#,
    options(att_syntax)
);
