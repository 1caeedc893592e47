//! Capstan's `RuntimeDefault` seccomp filter (pure): every syscall is allowed except those a
//! container has no business making, which fail with `EPERM`, modelled on the set Docker's
//! and containerd's default profiles block. Syscalls that need a capability the container
//! was given (`CAP_SYS_ADMIN` for mounts and namespaces, `CAP_SYS_PTRACE` for reading other
//! processes' memory) stay allowed when it has that capability. `clone3` answers `ENOSYS`, so
//! C libraries fall back to `clone`, whose namespace flags the filter can see.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::Result;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Blocked whatever the capabilities: kernel modules and images, reboot, accounting, swap,
/// the clock, raw I/O ports, keyrings, BPF and perf, obsolete and dangerous interfaces.
const ALWAYS_BLOCKED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "syslog",
    "uselib",
    "userfaultfd",
    "vm86",
    "vm86old",
];

/// Blocked unless the container has `CAP_SYS_ADMIN`: mounting and namespaces.
const ADMIN_BLOCKED: &[&str] = &[
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "pivot_root",
    "setns",
    "umount",
    "umount2",
    "unshare",
];

/// `clone` flags that create namespaces (blocked without `CAP_SYS_ADMIN`).
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// Blocked unless the container has `CAP_SYS_PTRACE`: reading other processes' memory.
const PTRACE_BLOCKED: &[&str] = &["kcmp", "process_vm_readv", "process_vm_writev"];

fn rule(names: &[&str], errno: u32) -> Result<LinuxSyscall> {
    Ok(LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .build()?)
}

/// The default filter for a container holding capabilities `caps` (as `CAP_...` names or
/// bare names, e.g. `SYS_ADMIN`).
pub fn runtime_default(caps: &[String]) -> Result<LinuxSeccomp> {
    let has = |cap: &str| {
        caps.iter()
            .any(|c| c.trim_start_matches("CAP_").eq_ignore_ascii_case(cap))
    };
    let mut rules = vec![rule(ALWAYS_BLOCKED, EPERM)?];
    if !has("SYS_ADMIN") {
        rules.push(rule(ADMIN_BLOCKED, EPERM)?);
        rules.push(rule(&["clone3"], ENOSYS)?);
        for flag in NAMESPACE_FLAGS {
            let arg = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(*flag)
                .value_two(*flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()?;
            rules.push(
                LinuxSyscallBuilder::default()
                    .names(vec!["clone".to_string()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(EPERM)
                    .args(vec![arg])
                    .build()?,
            );
        }
    }
    if !has("SYS_PTRACE") {
        rules.push(rule(PTRACE_BLOCKED, EPERM)?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(rules)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(f: &LinuxSeccomp) -> Vec<String> {
        f.syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn namespaces_and_mounts_are_blocked_unless_sys_admin_is_granted() {
        let plain = runtime_default(&["CAP_CHOWN".into()]).unwrap();
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActAllow);
        let names = blocked(&plain);
        for name in [
            "unshare",
            "mount",
            "setns",
            "clone",
            "clone3",
            "kexec_load",
            "kcmp",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} allowed");
        }
        assert!(!names.iter().any(|n| n == "read" || n == "execve"));
        let admin = blocked(&runtime_default(&["SYS_ADMIN".into()]).unwrap());
        assert!(!admin
            .iter()
            .any(|n| n == "unshare" || n == "mount" || n == "clone"));
        assert!(admin.iter().any(|n| n == "kexec_load"));
    }
}
