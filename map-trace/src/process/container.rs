//! Finding the container id of a process from the text of `/proc/<pid>/cgroup`.
//!
//! Container runtimes put each container in a cgroup named after its id, so the
//! cgroup paths of a process say which container (if any) it runs in. Every
//! runtime and cgroup driver spells that path differently; this module knows
//! the common spellings and nothing else, because guessing from arbitrary
//! hex-looking path components would report ids for things that are not
//! containers.
//!
//! An id is accepted only if it is exactly 64 *lowercase* hex digits. Docker,
//! containerd, CRI-O, podman and nerdctl all write ids that way; accepting
//! upper case would match no real layout and would only widen the room for
//! false positives.

/// Length of the ids docker, containerd, CRI-O, podman and nerdctl use.
const ID_LEN: usize = 64;

/// Component prefixes that name a container cgroup directly, as
/// `<prefix><id>` or `<prefix><id>.scope` (systemd driver).
///
/// The monitor processes (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`)
/// share a prefix with these but are not containers; they are rejected because
/// `conmon-<id>` is not a bare id, not by a special case.
const RUNTIME_PREFIXES: [&str; 5] = [
    "docker-",         // docker, systemd driver
    "cri-containerd-", // containerd CRI plugin, systemd driver
    "crio-",           // CRI-O (both drivers)
    "libpod-",         // podman (both drivers)
    "nerdctl-",        // nerdctl, systemd driver
];

/// The container id that the cgroup paths of a process name, if any.
///
/// `cgroup_file` is the whole text of `/proc/<pid>/cgroup`: cgroup v1 lines
/// (`N:controllers:/path`), the v2 line (`0::/path`) or both (hybrid). The
/// first line whose path yields an id wins, because on hybrid hosts some
/// lines (often the v2 one) still show a host cgroup. Lines that are not
/// `hierarchy:controllers:path` are ignored rather than treated as errors,
/// since the caller only wants an id when one is clearly there.
#[must_use]
pub fn container_id(cgroup_file: &str) -> Option<String> {
    cgroup_file
        .lines()
        .filter_map(line_path)
        .find_map(id_in_path)
        .map(str::to_owned)
}

/// The path field of one `hierarchy:controllers:path` line.
///
/// The path is everything after the second colon, so a colon inside the path
/// does not cut it short. The kernel appends ` (deleted)` to v2 paths of
/// removed cgroups; the name still tells which container it was.
fn line_path(line: &str) -> Option<&str> {
    let mut fields = line.splitn(3, ':');
    let _hierarchy = fields.next()?;
    let _controllers = fields.next()?;
    let path = fields.next()?.trim_end();
    Some(path.strip_suffix(" (deleted)").unwrap_or(path))
}

/// The container id in one cgroup path, if the path has a known layout.
///
/// When several components match, the deepest one wins: with nested runtimes
/// (docker-in-docker, kind nodes) the outer container comes first in the path,
/// but the process belongs to the innermost one.
fn id_in_path(path: &str) -> Option<&str> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut found = None;
    let mut parent: Option<&str> = None;
    let mut under_kubepods = false;
    for (depth, &component) in components.iter().enumerate() {
        let is_last = depth + 1 == components.len();
        let id = runtime_component_id(component)
            .or_else(|| bare_id_in_context(component, parent, depth, is_last, under_kubepods));
        if id.is_some() {
            found = id;
        }
        under_kubepods |= component.contains("kubepods");
        parent = Some(component);
    }
    found
}

/// The id in a component that names its runtime itself:
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `crio-<id>`, `libpod-<id>.scope`, `libpod-<id>`, `nerdctl-<id>.scope`.
fn runtime_component_id(component: &str) -> Option<&str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    RUNTIME_PREFIXES
        .iter()
        .filter_map(|prefix| name.strip_prefix(prefix))
        .find(|rest| is_id(rest))
}

/// A bare `<id>` component, accepted only where a runtime puts one:
/// - under a `docker` component (docker's cgroupfs driver, at any depth, e.g.
///   `/docker/<id>` or `/system.slice/docker/<id>`);
/// - as the last component below one whose name contains `kubepods`
///   (kubelet's cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>`; also
///   `kubepods.slice`, and kind's `kubelet-kubepods.slice`);
/// - as `/default/<id>` (nerdctl's cgroupfs mode, `default` namespace).
///
/// Elsewhere a 64-hex component may be anything (some other system's hash),
/// so it is not taken as a container.
fn bare_id_in_context<'a>(
    component: &'a str,
    parent: Option<&str>,
    depth: usize,
    is_last: bool,
    under_kubepods: bool,
) -> Option<&'a str> {
    if !is_id(component) {
        return None;
    }
    let under_docker = parent == Some("docker");
    let kubepods_leaf = under_kubepods && is_last;
    let nerdctl_default = depth == 1 && is_last && parent == Some("default");
    (under_docker || kubepods_leaf || nerdctl_default).then_some(component)
}

/// Whether `s` is exactly 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::container_id;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    const ID: &str = "3f6e4d0b2a1c9e8f7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706";
    const ID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const POD_UID: &str = "2b0c4f3e-8a1d-4c55-9e0f-6a7b8c9d0e1f";
    const POD_UID_SYSTEMD: &str = "2b0c4f3e_8a1d_4c55_9e0f_6a7b8c9d0e1f";

    /// A cgroup v1 file with every controller at `path`, plus `v2` as the
    /// unified line (as on hybrid hosts), the way the kernel orders them.
    fn v1(path: &str, v2: &str) -> String {
        let controllers = [
            "12:hugetlb",
            "11:memory",
            "10:cpuset",
            "9:perf_event",
            "8:devices",
            "7:net_cls,net_prio",
            "6:blkio",
            "5:freezer",
            "4:pids",
            "3:cpu,cpuacct",
            "2:rdma",
            "1:name=systemd",
        ];
        let mut text = String::new();
        for c in controllers {
            writeln!(text, "{c}:{path}").unwrap();
        }
        writeln!(text, "0::{v2}").unwrap();
        text
    }

    /// A pure cgroup v2 file: one line.
    fn v2(path: &str) -> String {
        format!("0::{path}\n")
    }

    #[test]
    fn docker_cgroupfs_v1() {
        let text = v1(&format!("/docker/{ID}"), "/system.slice/containerd.service");
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn docker_cgroupfs_v2() {
        assert_eq!(
            container_id(&v2(&format!("/docker/{ID}"))),
            Some(ID.to_owned())
        );
    }

    #[test]
    fn docker_cgroupfs_nested_in_parent() {
        let text = v1(&format!("/system.slice/docker/{ID}"), "/");
        assert_eq!(container_id(&text), Some(ID.to_owned()));
        let text = v2(&format!("/system.slice/docker/{ID}"));
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn docker_systemd_v1() {
        let text = v1(&format!("/system.slice/docker-{ID}.scope"), "/");
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn docker_systemd_v2() {
        let text = v2(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn kubepods_besteffort_cgroupfs() {
        let text = v1(&format!("/kubepods/besteffort/pod{POD_UID}/{ID}"), "/");
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn kubepods_burstable_cgroupfs() {
        let text = v2(&format!("/kubepods/burstable/pod{POD_UID}/{ID}"));
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn kubepods_guaranteed_cgroupfs() {
        let text = v1(&format!("/kubepods/pod{POD_UID}/{ID}"), "/");
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn kubepods_containerd_systemd_v1() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod{POD_UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(container_id(&v1(&path, "/")), Some(ID.to_owned()));
    }

    #[test]
    fn kubepods_containerd_systemd_v2() {
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn kubepods_docker_systemd() {
        let path = format!("/kubepods.slice/kubepods-pod{POD_UID_SYSTEMD}.slice/docker-{ID}.scope");
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn kind_node_nested_in_docker_reports_innermost() {
        let path = format!(
            "/docker/{ID2}/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn crio_systemd() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod{POD_UID_SYSTEMD}.slice/crio-{ID}.scope"
        );
        assert_eq!(container_id(&v1(&path, "/")), Some(ID.to_owned()));
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn crio_cgroupfs() {
        assert_eq!(
            container_id(&v2(&format!("/crio-{ID}"))),
            Some(ID.to_owned())
        );
        let nested = format!("/kubepods/burstable/pod{POD_UID}/crio-{ID}");
        assert_eq!(container_id(&v1(&nested, "/")), Some(ID.to_owned()));
    }

    #[test]
    fn crio_conmon_is_not_a_container() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod{POD_UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(container_id(&v2(&path)), None);
        assert_eq!(container_id(&v2(&format!("/crio-conmon-{ID}"))), None);
    }

    #[test]
    fn podman_rootful() {
        let path = format!("/machine.slice/libpod-{ID}.scope");
        assert_eq!(container_id(&v1(&path, "/")), Some(ID.to_owned()));
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn podman_rootless() {
        let path =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn podman_container_subgroup() {
        let path = format!("/machine.slice/libpod-{ID}.scope/container");
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
        let rootless = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        assert_eq!(container_id(&v2(&rootless)), Some(ID.to_owned()));
    }

    #[test]
    fn podman_cgroupfs() {
        let path = format!("/libpod_parent/libpod-{ID}");
        assert_eq!(container_id(&v1(&path, "/")), Some(ID.to_owned()));
    }

    #[test]
    fn podman_conmon_is_not_a_container() {
        let path = format!("/machine.slice/libpod-conmon-{ID}.scope");
        assert_eq!(container_id(&v2(&path)), None);
    }

    #[test]
    fn nerdctl_systemd() {
        let path = format!("/system.slice/nerdctl-{ID}.scope");
        assert_eq!(container_id(&v1(&path, "/")), Some(ID.to_owned()));
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
    }

    #[test]
    fn nerdctl_cgroupfs_default_namespace() {
        assert_eq!(
            container_id(&v2(&format!("/default/{ID}"))),
            Some(ID.to_owned())
        );
        // Only as the whole path: elsewhere `default/<hex>` means nothing.
        assert_eq!(container_id(&v2(&format!("/a/default/{ID}"))), None);
        assert_eq!(container_id(&v2(&format!("/default/{ID}/x"))), None);
    }

    #[test]
    fn generic_kubepods_leaf() {
        let path = format!("/kubepods.slice/whatever/{ID}");
        assert_eq!(container_id(&v2(&path)), Some(ID.to_owned()));
        // Only the last component: a 64-hex parent of something else is not it.
        assert_eq!(container_id(&v2(&format!("/kubepods/{ID}/x"))), None);
    }

    #[test]
    fn first_line_with_an_id_wins() {
        let text = format!(
            "12:memory:/user.slice/user-0.slice/session-3.scope\n\
             11:pids:/docker/{ID}\n\
             0::/system.slice/docker-{ID2}.scope\n"
        );
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn hybrid_with_host_lines_first() {
        let text = format!("1:name=systemd:/init.scope\n0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id(&text), Some(ID.to_owned()));
    }

    #[test]
    fn deleted_cgroup_and_crlf() {
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{ID}.scope (deleted)\n")),
            Some(ID.to_owned())
        );
        assert_eq!(
            container_id(&format!("0::/docker/{ID}\r\n")),
            Some(ID.to_owned())
        );
    }

    #[test]
    fn host_paths_have_no_id() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/ssh.service",
            "/init.scope",
            "/process_api/05a18b9b2a9cb69acd52c48919250667",
            "/kubepods/burstable/pod1234",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/docker",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(container_id(&v2(path)), None, "v2 {path}");
            assert_eq!(container_id(&v1(path, path)), None, "v1 {path}");
        }
    }

    #[test]
    fn bare_id_outside_known_layouts_is_ignored() {
        assert_eq!(container_id(&v2(&format!("/{ID}"))), None);
        assert_eq!(container_id(&v2(&format!("/system.slice/{ID}"))), None);
        assert_eq!(container_id(&v2(&format!("/other-{ID}.scope"))), None);
    }

    #[test]
    fn id_must_be_exactly_64_lowercase_hex() {
        let upper = ID.to_uppercase();
        assert_eq!(container_id(&v2(&format!("/docker/{upper}"))), None);
        assert_eq!(container_id(&v2(&format!("/docker/{}", &ID[1..]))), None);
        assert_eq!(container_id(&v2(&format!("/docker/{ID}0"))), None);
        assert_eq!(
            container_id(&v2(&format!("/docker-{}g.scope", &ID[1..]))),
            None
        );
    }

    #[test]
    fn malformed_input_has_no_id() {
        assert_eq!(container_id(""), None);
        assert_eq!(container_id("\n\n"), None);
        assert_eq!(container_id(&format!("/docker/{ID}")), None);
        assert_eq!(container_id(&format!("0:/docker/{ID}")), None);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = container_id(&text);
        }

        #[test]
        fn cgroup_like_text_never_panics(
            text in "([0-9]{0,2}:[a-z=,]{0,12}:(/[a-z0-9._@:()-]{0,70}){0,6}( \\(deleted\\))?\r?\n){0,6}"
        ) {
            let _ = container_id(&text);
        }

        #[test]
        fn any_id_in_a_known_layout_is_found(
            found in "[0-9a-f]{64}",
            parent in "(/[a-z0-9._-]{1,20}){0,3}",
            layout in 0..5usize,
        ) {
            let path = match layout {
                0 => format!("{parent}/docker/{found}"),
                1 => format!("{parent}/docker-{found}.scope"),
                2 => format!("{parent}/crio-{found}.scope"),
                3 => format!("{parent}/libpod-{found}.scope/container"),
                _ => format!("/kubepods{parent}/{found}"),
            };
            prop_assert_eq!(container_id(&v2(&path)), Some(found));
        }
    }
}
