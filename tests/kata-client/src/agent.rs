//! The agent's API calls this test makes (`grpc.AgentService`, kata-containers 4.1.0
//! `agent.proto`; field numbers as there) and the pod's OCI spec (`oci.proto`).
//!
//! The spec is what the Kata runtime sends for a Kubernetes container, minus what a test pod
//! does not need: new pid, ipc, uts and mount namespaces and NO network namespace (the runtime
//! strips it: the pod's network is the VM's, where podmesh's deny and TPROXY tables are), the
//! runtime's default capability set (no CAP_NET_ADMIN, no CAP_SYS_ADMIN), fresh proc, sysfs (ro),
//! tmpfs /dev and /tmp, a read-only rootfs that is a directory of the image (no image pull).

use crate::proto::{self, Msg, ProtoError};
use crate::ttrpc::{Client, TtrpcError};
use std::time::Duration;

const SERVICE: &str = "grpc.AgentService";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Ttrpc(#[from] TtrpcError),
    #[error("{method}: malformed answer: {source}")]
    Proto { method: &'static str, source: ProtoError },
}

/// The pod this test runs: one container from a local rootfs.
pub struct Pod<'a> {
    pub sandbox_id: &'a str,
    pub container_id: &'a str,
    pub hostname: &'a str,
    /// Absolute path in the VM of the container's root file system.
    pub rootfs: &'a str,
    pub args: &'a [String],
}

/// What GetGuestDetails says about the agent.
#[derive(Debug)]
pub struct AgentDetails {
    pub version: String,
    pub init_daemon: bool,
    pub supports_seccomp: bool,
}

/// The container runtime's default capabilities (containerd / CRI-O), as in agent-ctl's template.
const CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
const ENV: [&str; 1] = ["PATH=/bin"];

fn process(args: &[String]) -> Msg {
    let caps = Msg::new().strings(1, &CAPABILITIES).strings(2, &CAPABILITIES).strings(4, &CAPABILITIES);
    // Terminal 1 (false), User 3 (uid/gid 0), Args 4, Env 5, Cwd 6, Capabilities 7, NoNewPrivileges 9.
    Msg::new().msg(3, Msg::new()).strings(4, args).strings(5, &ENV).string(6, "/").msg(7, caps).bool(9, true)
}

fn mount(destination: &str, fstype: &str, source: &str, options: &[&str]) -> Msg {
    Msg::new().string(1, destination).string(2, source).string(3, fstype).strings(4, options)
}

fn spec(pod: &Pod<'_>) -> Msg {
    let ns = |t: &str| Msg::new().string(1, t);
    let linux = Msg::new()
        .msg(4, Msg::new())
        .string(5, &format!("/kubepods/{}/{}", pod.sandbox_id, pod.container_id))
        .msg(6, ns("pid"))
        .msg(6, ns("ipc"))
        .msg(6, ns("uts"))
        .msg(6, ns("mount"))
        .strings(10, &["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"])
        .strings(11, &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]);
    Msg::new()
        .string(1, "1.1.0")
        .msg(2, process(pod.args))
        .msg(3, Msg::new().string(1, pod.rootfs).bool(2, true))
        .string(4, pod.hostname)
        .msg(5, mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]))
        .msg(5, mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]))
        .msg(
            5,
            mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        )
        .msg(5, mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]))
        .msg(5, mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777", "size=16m"]))
        .map(
            7,
            &[
                ("io.katacontainers.pkg.oci.container_type", "pod_container"),
                ("io.kubernetes.cri.container-type", "container"),
                ("io.kubernetes.cri.sandbox-id", pod.sandbox_id),
            ],
        )
        .msg(8, linux)
}

pub struct Agent {
    client: Client,
    timeout: Duration,
}

impl Agent {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    fn call(&mut self, method: &'static str, req: Msg) -> Result<Vec<u8>, AgentError> {
        Ok(self.client.call(SERVICE, method, req, self.timeout)?)
    }

    pub fn guest_details(&mut self) -> Result<AgentDetails, AgentError> {
        let method = "GetGuestDetails";
        let answer = self.call(method, Msg::new())?;
        let proto_err = |source| AgentError::Proto { method, source };
        let f = proto::fields(&answer).map_err(proto_err)?;
        let d = proto::fields(proto::get_bytes(&f, 2)).map_err(proto_err)?;
        Ok(AgentDetails {
            version: String::from_utf8_lossy(proto::get_bytes(&d, 1)).into_owned(),
            init_daemon: proto::get_varint_field(&d, 2) != 0,
            supports_seccomp: proto::get_varint_field(&d, 5) != 0,
        })
    }

    pub fn create_sandbox(&mut self, pod: &Pod<'_>) -> Result<(), AgentError> {
        // hostname 1, sandbox_pidns 4 (false: each container its own pid namespace), sandbox_id 5.
        self.call("CreateSandbox", Msg::new().string(1, pod.hostname).string(5, pod.sandbox_id)).map(drop)
    }

    pub fn create_container(&mut self, pod: &Pod<'_>) -> Result<(), AgentError> {
        let req = Msg::new().string(1, pod.container_id).string(2, pod.container_id).msg(6, spec(pod));
        self.call("CreateContainer", req).map(drop)
    }

    pub fn start_container(&mut self, container_id: &str) -> Result<(), AgentError> {
        self.call("StartContainer", Msg::new().string(1, container_id)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_has_no_network_namespace_and_a_readonly_local_root() {
        let args = vec!["/bin/httpd".to_owned()];
        let pod = Pod { sandbox_id: "s", container_id: "c", hostname: "h", rootfs: "/r", args: &args };
        let bytes = spec(&pod).into_bytes();
        let f = proto::fields(&bytes).unwrap();
        let root = proto::fields(proto::get_bytes(&f, 3)).unwrap();
        assert_eq!(proto::get_bytes(&root, 1), b"/r");
        assert_eq!(proto::get_varint_field(&root, 2), 1);
        let linux = proto::fields(proto::get_bytes(&f, 8)).unwrap();
        let namespaces: Vec<Vec<u8>> = linux
            .iter()
            .filter(|(n, _)| *n == 6)
            .map(|(_, v)| match v {
                proto::Value::Bytes(b) => proto::get_bytes(&proto::fields(b).unwrap(), 1).to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(namespaces, [b"pid".to_vec(), b"ipc".to_vec(), b"uts".to_vec(), b"mount".to_vec()]);
        let process = proto::fields(proto::get_bytes(&f, 2)).unwrap();
        let caps = proto::fields(proto::get_bytes(&process, 7)).unwrap();
        assert!(caps.iter().all(|(_, v)| !matches!(v, proto::Value::Bytes(b) if b.ends_with(b"ADMIN"))));
    }
}
