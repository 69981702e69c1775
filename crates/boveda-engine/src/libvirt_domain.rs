//! libvirt domain definitions: the disks a VM uses, and the definition of a
//! restored copy that points at restored disks ("create new VM").

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// One disk of a domain: the guest device name and its backing file or device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDisk {
    /// The guest device, such as `vda`.
    pub target: String,
    pub path: PathBuf,
    /// The bus the guest sees it on (`virtio`, `sata`, `ide`, `scsi`).
    pub bus: String,
    /// The image format the definition says (`<driver type=...>`).
    pub format: Option<String>,
    /// Where the path sits in the XML text, to rewrite it on restore.
    source_range: Range<usize>,
    /// Where the disk's format is said (`<driver type='...'>`), to say the
    /// restored disk's format instead.
    format_at: FormatAt,
}

/// How a restored disk's format gets into its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FormatAt {
    /// The value of the `type` attribute of `<driver>`: replaced.
    Value(Range<usize>),
    /// A `<driver>` without `type`: inserted at this offset (after `<driver`).
    Attribute(usize),
    /// No `<driver>`: one inserted at this offset (before `<source>`).
    Element(usize),
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub disks: Vec<DomainDisk>,
    /// A QMP monitor of the VM's QEMU for boveda: the definition passes
    /// QEMU `-qmp unix:PATH,server=on,wait=off` through libvirt's
    /// `<qemu:commandline>` (libvirt keeps its own monitor for itself).
    pub qmp: Option<PathBuf>,
    /// The host side of the guest agent's channel (`<channel type='unix'>`
    /// to `org.qemu.guest_agent.0`), when the definition has one.
    pub guest_agent: Option<PathBuf>,
    /// What the VM runs on: CPUs, memory, machine and a kernel booted
    /// directly, for booting a copy of it (`crate::boot_check`).
    pub hardware: Hardware,
    /// `<uuid>`, when the definition gives one.
    pub uuid: Option<String>,
    xml: String,
    name_range: Range<usize>,
    uuid_range: Option<Range<usize>>,
    /// Each `<mac .../>` of the network interfaces: dropped in a copy, so
    /// that libvirt gives it new addresses.
    mac_ranges: Vec<Range<usize>>,
    /// A UEFI VM's `<nvram>` element and its attributes but `type` (the
    /// template, its format...): a copy gets its own variables (the
    /// original's file would be shared).
    nvram: Option<(Range<usize>, Attributes)>,
    /// The file holding a UEFI VM's variables (boot entries, boot order),
    /// as `<nvram>` names it: its text, or its `<source file=...>`.
    pub nvram_file: Option<PathBuf>,
}

/// The largest UEFI variable store read from a VM (OVMF's are 128 KiB
/// and 528 KiB; AAVMF's 64 MiB).
pub const MAX_FIRMWARE_VARS: u64 = 64 << 20;

/// Whether `bytes` look like a UEFI variable store: a firmware volume
/// (its header's `_FVH` signature at byte 40) of a plausible size. A file
/// that is not one is not kept with a VM's point, and a point's is used
/// to boot only when it is one.
#[must_use]
pub fn is_firmware_vars(bytes: &[u8]) -> bool {
    (4096..=MAX_FIRMWARE_VARS as usize).contains(&bytes.len()) && bytes.get(40..44) == Some(b"_FVH".as_slice())
}

/// An element's attributes, by name and value.
type Attributes = Vec<(String, String)>;

/// The virtual hardware a definition gives its VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardware {
    /// `<vcpu>`.
    pub cpus: Option<u32>,
    /// `<memory>`, in MiB.
    pub memory_mib: Option<u64>,
    /// The `machine` of `<os><type>` (`pc`, `q35`, `pc-i440fx-7.2`, ...).
    pub machine: Option<String>,
    /// A kernel booted directly (`<os><kernel>`), its initrd and command line.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// The VM boots by UEFI: `<os firmware='efi'>`, or a `<loader>` of type
    /// `pflash` (the loader's path itself is not kept: a verification
    /// boots this machine's own firmware).
    pub uefi: bool,
}

/// `<memory unit='...'>N</memory>` in MiB (libvirt's default unit is KiB).
fn memory_mib(n: roxmltree::Node<'_, '_>) -> Option<u64> {
    let value: u64 = n.text()?.trim().parse().ok()?;
    let per: u64 = match n.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    Some(value.saturating_mul(per) >> 20)
}

fn hardware(root: roxmltree::Node<'_, '_>) -> Hardware {
    let os = child(root, "os");
    let os_text = |tag: &str| os.and_then(|o| child(o, tag)).and_then(|n| n.text()).map(|t| t.trim().to_string());
    Hardware {
        cpus: child(root, "vcpu").and_then(|n| n.text()).and_then(|t| t.trim().parse().ok()),
        memory_mib: child(root, "memory").and_then(memory_mib),
        machine: os.and_then(|o| child(o, "type")).and_then(|t| t.attribute("machine")).map(str::to_string),
        kernel: os_text("kernel").map(PathBuf::from),
        initrd: os_text("initrd").map(PathBuf::from),
        cmdline: os_text("cmdline"),
        uefi: os.is_some_and(|o| {
            o.attribute("firmware") == Some("efi")
                || child(o, "loader").is_some_and(|l| l.attribute("type") == Some("pflash"))
        }),
    }
}

/// The XML namespace of libvirt's QEMU pass-through elements.
const QEMU_NAMESPACE: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// The virtio-serial port name of the QEMU guest agent.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(tag))
}

fn malformed(file: &Path, why: impl std::fmt::Display) -> EngineError {
    EngineError::Domain { path: file.to_path_buf(), reason: format!("malformed domain XML: {why}") }
}

impl Domain {
    /// Parses a domain definition. Only `<disk device='disk'>` entries of
    /// type `file` or `block` count; CD-ROMs and network disks are skipped.
    ///
    /// # Errors
    /// `Domain` for XML that does not parse or is not a libvirt domain.
    pub fn parse(file: &Path, xml: String) -> Result<Self> {
        let (name, name_range, uuid_range, uuid, disks, guest_agent, qmp, hardware, mac_ranges, nvram) = {
            let doc = roxmltree::Document::parse(&xml).map_err(|e| malformed(file, e))?;
            let root = doc.root_element();
            if root.tag_name().name() != "domain" {
                return Err(malformed(file, format!("root element is <{}>, not <domain>", root.tag_name().name())));
            }
            let name_node = child(root, "name").ok_or_else(|| malformed(file, "no <name>"))?;
            let text =
                name_node.first_child().filter(|t| t.is_text()).ok_or_else(|| malformed(file, "empty <name>"))?;
            let name = text.text().unwrap_or_default().trim().to_string();
            let uuid_range = child(root, "uuid").map(|u| u.range());
            let uuid = child(root, "uuid").and_then(|u| u.text()).map(|t| t.trim().to_lowercase());
            let mut disks = Vec::new();
            if let Some(devices) = child(root, "devices") {
                for disk in devices.children().filter(|c| c.has_tag_name("disk")) {
                    if disk.attribute("device").unwrap_or("disk") != "disk" {
                        continue;
                    }
                    let attr = match disk.attribute("type") {
                        Some("file") => "file",
                        Some("block") => "dev",
                        _ => continue,
                    };
                    let target = child(disk, "target")
                        .and_then(|t| t.attribute("dev"))
                        .ok_or_else(|| malformed(file, "a disk without <target dev=...>"))?;
                    let Some(source) = child(disk, "source") else { continue };
                    let Some(a) = source.attribute_node(attr) else { continue };
                    let format_at = match child(disk, "driver") {
                        Some(d) => match d.attribute_node("type") {
                            Some(t) => FormatAt::Value(t.range_value()),
                            None => FormatAt::Attribute(d.range().start + "<driver".len()),
                        },
                        None => FormatAt::Element(source.range().start),
                    };
                    let bus = child(disk, "target").and_then(|t| t.attribute("bus")).unwrap_or("virtio");
                    let format = child(disk, "driver").and_then(|d| d.attribute("type")).map(str::to_string);
                    disks.push(DomainDisk {
                        target: target.to_string(),
                        path: PathBuf::from(a.value()),
                        bus: bus.to_string(),
                        format,
                        source_range: a.range_value(),
                        format_at,
                    });
                }
            }
            let guest_agent = child(root, "devices").and_then(|devices| {
                devices
                    .children()
                    .filter(|c| c.has_tag_name("channel") && c.attribute("type") == Some("unix"))
                    .find(|c| child(*c, "target").and_then(|t| t.attribute("name")) == Some(GUEST_AGENT_CHANNEL))
                    .and_then(|c| child(c, "source"))
                    .and_then(|s| s.attribute("path"))
                    .map(PathBuf::from)
            });
            let args: Vec<&str> = root
                .children()
                .filter(|c| c.tag_name().name() == "commandline" && c.tag_name().namespace() == Some(QEMU_NAMESPACE))
                .flat_map(|c| c.children().filter(|a| a.tag_name().name() == "arg"))
                .filter_map(|a| a.attribute("value"))
                .collect();
            let qmp = args
                .windows(2)
                .find(|w| w[0] == "-qmp" && w[1].starts_with("unix:"))
                .map(|w| PathBuf::from(w[1]["unix:".len()..].split(',').next().unwrap_or_default()));
            let macs = child(root, "devices")
                .into_iter()
                .flat_map(|d| d.children().filter(|c| c.has_tag_name("interface")))
                .filter_map(|i| child(i, "mac"))
                .map(|m| m.range())
                .collect();
            let nvram_node = child(root, "os").and_then(|o| child(o, "nvram"));
            let nvram = nvram_node.map(|n| {
                let kept = n
                    .attributes()
                    .filter(|a| a.name() != "type" && a.namespace().is_none())
                    .map(|a| (a.name().to_string(), a.value().to_string()))
                    .collect();
                (n.range(), kept)
            });
            let nvram_file = nvram_node.and_then(|n| {
                let named = child(n, "source").and_then(|s| s.attribute("file")).or_else(|| n.text());
                named.map(str::trim).filter(|t| !t.is_empty()).map(PathBuf::from)
            });
            (name, text.range(), uuid_range, uuid, disks, guest_agent, qmp, hardware(root), macs, (nvram, nvram_file))
        };
        let (nvram, nvram_file) = nvram;
        if name.is_empty() {
            return Err(malformed(file, "empty <name>"));
        }
        // libvirt takes no such name, and a restore names files after it
        if name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(malformed(file, "<name> is not a name libvirt takes"));
        }
        if disks.iter().any(|d| !crate::disk_backup::is_safe_disk_name(&d.target)) {
            return Err(malformed(file, "a disk target is not a plain device name"));
        }
        Ok(Self {
            name,
            disks,
            qmp,
            guest_agent,
            hardware,
            uuid,
            xml,
            name_range,
            uuid_range,
            mac_ranges,
            nvram,
            nvram_file,
        })
    }

    /// Reads and parses a definition file.
    ///
    /// # Errors
    /// `Domain` when the file cannot be read or parsed.
    pub fn load(file: &Path) -> Result<Self> {
        let xml = std::fs::read_to_string(file)
            .map_err(|e| EngineError::Domain { path: file.to_path_buf(), reason: format!("cannot be read: {e}") })?;
        Self::parse(file, xml)
    }

    pub fn xml(&self) -> &str {
        &self.xml
    }

    /// The definition of a new domain: another name, no UUID and no MAC
    /// addresses (libvirt makes new ones, so the copy can run beside the
    /// original), a UEFI VM's NVRAM file `nvram` (the copy's own, restored
    /// from the point) or, without one, none named (libvirt makes the
    /// copy's own from the template, rather than sharing the original's),
    /// and each disk's source replaced by its restored path.
    /// Each restored disk is named with its real `format` (`raw`, `qcow2`)
    /// in its `<driver type=...>`, whatever the original disk's was.
    pub fn rewritten(
        &self,
        new_name: &str,
        new_paths: &[(String, PathBuf)],
        format: &str,
        nvram: Option<&Path>,
    ) -> String {
        let mut edits: Vec<(Range<usize>, String)> = vec![(self.name_range.clone(), xml_escape(new_name))];
        if let Some(u) = &self.uuid_range {
            edits.push((u.clone(), String::new()));
        }
        edits.extend(self.mac_ranges.iter().map(|m| (m.clone(), String::new())));
        if let Some((at, kept)) = &self.nvram {
            // the element with the copy's own file, or without a file
            // (text or <source>): libvirt makes the copy's own from the
            // template
            let attrs: String = kept.iter().map(|(k, v)| format!(" {k}='{}'", xml_escape(v))).collect();
            let own = match nvram {
                Some(file) => format!("<nvram{attrs}>{}</nvram>", xml_escape(&file.display().to_string())),
                None if kept.is_empty() => String::new(),
                None => format!("<nvram{attrs}/>"),
            };
            edits.push((at.clone(), own));
        }
        for d in &self.disks {
            if let Some((_, p)) = new_paths.iter().find(|(t, _)| *t == d.target) {
                edits.push((d.source_range.clone(), xml_escape(&p.display().to_string())));
                let format = xml_escape(format);
                edits.push(match &d.format_at {
                    FormatAt::Value(r) => (r.clone(), format),
                    FormatAt::Attribute(at) => (*at..*at, format!(" type='{format}'")),
                    FormatAt::Element(at) => (*at..*at, format!("<driver name='qemu' type='{format}'/>\n      ")),
                });
            }
        }
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut out = self.xml.clone();
        for (r, text) in edits {
            out.replace_range(r, &text);
        }
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='kvm'>
  <name>web</name>
  <uuid>8f7e6d5c-0000-4000-8000-000000000001</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/install.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type="block" device="disk">
      <source dev="/dev/vg0/data"/>
      <target dev="vdb"/>
    </disk>
  </devices>
</domain>"#;

    #[test]
    fn parses_disks_and_rewrites_a_new_definition() {
        let d = Domain::parse(Path::new("web.xml"), XML.to_string()).expect("parse");
        assert_eq!(d.name, "web");
        let found: Vec<_> = d.disks.iter().map(|x| (x.target.as_str(), x.path.to_str().expect("utf8"))).collect();
        assert_eq!(found, vec![("vda", "/var/lib/libvirt/images/web.qcow2"), ("vdb", "/dev/vg0/data")]);
        let new = d.rewritten(
            "web-restored",
            &[("vda".into(), PathBuf::from("/r/web-vda.img")), ("vdb".into(), PathBuf::from("/r/web-vdb.img"))],
            "raw",
            None,
        );
        let again = Domain::parse(Path::new("new.xml"), new.clone()).expect("parse rewritten");
        assert_eq!(again.name, "web-restored");
        assert_eq!(again.disks[0].path, PathBuf::from("/r/web-vda.img"));
        assert_eq!(again.disks[1].path, PathBuf::from("/r/web-vdb.img"));
        assert!(!new.contains("<uuid>"));
        assert!(new.contains("/iso/install.iso"), "other devices are kept");
        // the qcow2 disk restored as raw is named raw; the disk without a
        // <driver> gets one
        assert!(!new.contains("type='qcow2'"), "{new}");
        assert_eq!(new.matches("type='raw'").count(), 2, "{new}");
        let again = Domain::parse(Path::new("new.xml"), new).expect("parse");
        assert_eq!(again.disks.len(), 2);
    }

    #[test]
    fn a_copy_drops_its_mac_addresses_and_reads_cpus_memory_and_kernel() {
        let xml = XML.replace(
            "  <devices>",
            "  <vcpu>4</vcpu>\n  <memory unit='GiB'>2</memory>\n  <os><type machine='q35'>hvm</type><kernel>/boot/k</kernel></os>\n  <devices>\n    <interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/></interface>",
        );
        let d = Domain::parse(Path::new("web.xml"), xml).expect("parse");
        assert_eq!(d.hardware.cpus, Some(4));
        assert_eq!(d.hardware.memory_mib, Some(2048));
        assert_eq!(d.hardware.machine.as_deref(), Some("q35"));
        assert_eq!(d.hardware.kernel, Some(PathBuf::from("/boot/k")));
        assert!(!d.hardware.uefi, "BIOS unless the definition says otherwise");
        assert_eq!(d.disks[0].format.as_deref(), Some("qcow2"));
        let new = d.rewritten("copy", &[], "raw", None);
        assert!(!new.contains("52:54:00:12:34:56") && new.contains("<source network='default'/>"), "{new}");
        Domain::parse(Path::new("copy.xml"), new).expect("parse the copy");
    }

    #[test]
    fn a_uefi_vm_is_known_by_its_firmware_or_its_pflash_loader() {
        for os in [
            "<os firmware='efi'><type machine='q35'>hvm</type></os>",
            "<os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader><nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram></os>",
        ] {
            let d = Domain::parse(Path::new("web.xml"), XML.replace("  <devices>", &format!("  {os}\n  <devices>")))
                .expect("parse");
            assert!(d.hardware.uefi, "{os}");
        }
        // a copy does not share the original's variables
        let d = Domain::parse(
            Path::new("web.xml"),
            XML.replace("  <devices>", "  <os firmware='efi'><type>hvm</type><nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' format='raw'>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram></os>\n  <devices>"),
        )
        .expect("parse");
        let copy = d.rewritten("copy", &[], "raw", None);
        assert!(
            !copy.contains("web_VARS.fd")
                && copy.contains("<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' format='raw'/>"),
            "{copy}"
        );
        assert!(Domain::parse(Path::new("copy.xml"), copy).expect("parse the copy").hardware.uefi);
        assert_eq!(d.nvram_file, Some(PathBuf::from("/var/lib/libvirt/qemu/nvram/web_VARS.fd")));
        // a copy with the point's variables restored names its own file
        let copy = d.rewritten("copy", &[], "raw", Some(Path::new("/r/copy_VARS.fd")));
        assert!(
            copy.contains("<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' format='raw'>/r/copy_VARS.fd</nvram>"),
            "{copy}"
        );
        let again = Domain::parse(Path::new("copy.xml"), copy).expect("parse the copy");
        assert_eq!(again.nvram_file, Some(PathBuf::from("/r/copy_VARS.fd")));
        // libvirt's newer form names the file in <source>
        let d = Domain::parse(
            Path::new("web.xml"),
            XML.replace("  <devices>", "  <os firmware='efi'><type>hvm</type><nvram type='file'><source file='/v/web_VARS.fd'/></nvram></os>\n  <devices>"),
        )
        .expect("parse");
        assert_eq!(d.nvram_file, Some(PathBuf::from("/v/web_VARS.fd")));
        assert!(!d.rewritten("copy", &[], "raw", None).contains("web_VARS"));
        let rom = XML.replace(
            "  <devices>",
            "  <os><type>hvm</type><loader type='rom'>/usr/share/seabios/bios.bin</loader></os>\n  <devices>",
        );
        assert!(!Domain::parse(Path::new("web.xml"), rom).expect("parse").hardware.uefi);
    }

    #[test]
    fn a_name_that_leads_elsewhere_is_not_a_domain_name() {
        for name in ["../../x", "a/b", ".."] {
            let xml = XML.replace("<name>web</name>", &format!("<name>{name}</name>"));
            let err = Domain::parse(Path::new("web.xml"), xml).expect_err(name);
            assert!(err.to_string().contains("not a name libvirt takes"), "{err}");
        }
    }

    #[test]
    fn a_firmware_variable_store_is_known_by_its_volume_header() {
        let mut vars = vec![0xffu8; 540_672];
        assert!(!is_firmware_vars(&vars), "no header");
        vars[40..44].copy_from_slice(b"_FVH");
        assert!(is_firmware_vars(&vars));
        assert!(!is_firmware_vars(&vars[..1024]), "too small to be one");
        assert!(!is_firmware_vars(b"root:x:0:0:root:/root:/bin/bash\n"), "a file a definition could name");
    }

    #[test]
    fn a_restored_disk_is_named_with_its_real_format() {
        let xml = XML.replace("<driver name='qemu' type='qcow2'/>", "<driver name='qemu' cache='none'/>");
        let d = Domain::parse(Path::new("web.xml"), xml).expect("parse");
        let new = d.rewritten("w", &[("vda".into(), PathBuf::from("/r/vda.qcow2"))], "qcow2", None);
        assert!(new.contains("<driver type='qcow2' name='qemu' cache='none'/>"), "{new}");
        assert!(!new.contains("/r/vdb"), "only restored disks change: {new}");
    }

    #[test]
    fn a_monitor_and_a_guest_agent_are_found_in_the_definition() {
        let d = Domain::parse(Path::new("web.xml"), XML.to_string()).expect("parse");
        assert_eq!((d.qmp, d.guest_agent), (None, None));
        let xml = r#"<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>db</name>
  <devices>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-db/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'><source mode='bind' path='/other'/><target type='virtio' name='org.example.0'/></channel>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-smp'/><qemu:arg value='2'/>
    <qemu:arg value='-qmp'/><qemu:arg value='unix:/run/boveda/db.qmp,server=on,wait=off'/>
  </qemu:commandline>
</domain>"#;
        let d = Domain::parse(Path::new("db.xml"), xml.to_string()).expect("parse");
        assert_eq!(d.qmp, Some(PathBuf::from("/run/boveda/db.qmp")));
        assert_eq!(
            d.guest_agent,
            Some(PathBuf::from("/var/lib/libvirt/qemu/channel/target/domain-3-db/org.qemu.guest_agent.0"))
        );
    }

    #[test]
    fn malformed_definitions_are_named() {
        for bad in ["<domain><name>x</name>", "<pool><name>x</name></pool>", "<domain><devices/></domain>"] {
            let err = Domain::parse(Path::new("bad.xml"), bad.to_string()).expect_err(bad).to_string();
            assert!(err.contains("bad.xml") && err.contains("malformed domain XML"), "{err}");
        }
    }
}
