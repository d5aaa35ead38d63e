//! The mount table (`/proc/self/mountinfo`, proc(5)), read before a run so that the child can
//! remount every mount read-only with plain syscalls: after `fork` in a multi-threaded
//! process the child must not allocate.
use std::path::PathBuf;

/// One mount: where, and the per-mount flags a bind remount must keep. In a user namespace
/// the kernel locks the `nosuid`/`nodev`/`noexec`/atime flags of inherited mounts, so a
/// remount that changed them would fail with `EPERM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub(crate) point: PathBuf,
    pub(crate) read_only: bool,
    /// `MS_*` flags to pass with `MS_REMOUNT | MS_BIND | MS_RDONLY`.
    pub(crate) flags: libc::c_ulong,
}

/// Parses mountinfo text: field 5 is the mount point (octal escapes for space, tab, newline
/// and backslash), field 6 the per-mount options.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            let options = fields.next()?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                read_only: options.split(',').any(|o| o == "ro"),
                flags: remount_flags(options),
            })
        })
        .collect()
}

/// The flags of mountinfo's per-mount options; no atime option means `strictatime`.
fn remount_flags(options: &str) -> libc::c_ulong {
    let mut flags = 0;
    let mut atime_given = false;
    for option in options.split(',') {
        flags |= match option {
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "nosymfollow" => libc::MS_NOSYMFOLLOW,
            "nodiratime" => libc::MS_NODIRATIME,
            "noatime" => {
                atime_given = true;
                libc::MS_NOATIME
            }
            "relatime" => {
                atime_given = true;
                libc::MS_RELATIME
            }
            _ => 0,
        };
    }
    if !atime_given {
        flags |= libc::MS_STRICTATIME;
    }
    flags
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                out.push(digits.iter().fold(0u8, |n, d| n * 8 + (d - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_flags_and_escapes() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    28 27 0:25 / /mnt/a\\040b ro,nosuid,nodev - tmpfs x ro\n\
                    29 27 0:26 / /srv rw,noexec,noatime shared:1 - ext4 /dev/vdb rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            vec![
                Mount {
                    point: "/".into(),
                    read_only: false,
                    flags: libc::MS_RELATIME
                },
                Mount {
                    point: "/mnt/a b".into(),
                    read_only: true,
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME
                },
                Mount {
                    point: "/srv".into(),
                    read_only: false,
                    flags: libc::MS_NOEXEC | libc::MS_NOATIME
                },
            ]
        );
    }
}
