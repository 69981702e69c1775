//! "Configure backup" on a registered host: the server asks the host's
//! agent what one of its folders holds, and which VMs it defines, and
//! shows what the host found (real processes: the server, the host's
//! agent, curl as the admin's client and as a host taken over).

use std::process::Stdio;

use crate::common::{Env, two_disk_vm};
use crate::fleet::{Reaped, admin, attack, credentials, fleet_vault, host_cmd, identity, register, serve};
use crate::serve::curl;

#[test]
fn the_server_shows_what_a_hosts_agent_finds_in_its_folders_and_its_vms() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    // what the host has: a folder with a sub-folder, a file, a disk image,
    // a link and a hostile name; and a libvirt folder with one VM
    let shared = env.path("web1-srv");
    std::fs::create_dir_all(shared.join("photos")).expect("mkdir");
    std::fs::write(shared.join("a.txt"), b"hello").expect("file");
    std::fs::write(shared.join("disk.qcow2"), vec![0u8; 4096]).expect("image");
    std::os::unix::fs::symlink("/etc/passwd", shared.join("link")).expect("link");
    let hostile = "<img src=x onerror=alert(1)>\n.txt";
    std::fs::write(shared.join(hostile), b"x").expect("hostile name");
    let libvirt = env.path("web1-libvirt");
    let vm = two_disk_vm(&env, &libvirt, "web");
    let _agent = Reaped(
        host_cmd(&env, "web1", &["host", "agent"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("agent"),
    );

    let token = admin(&env, &["token", "create", "--role", "Contributor"]).trim().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let api = format!("{}/api/v1/vaults/test-vault", server.url);
    let discover = |path: &str| {
        let body = serde_json::json!({ "path": path, "libvirt_dir": libvirt }).to_string();
        let url = format!("{api}/hosts/web1/discover");
        curl(&["--cacert", &cert, "-H", &bearer, "-H", "Content-Type: application/json", "-d", &body, &url])
    };
    let (head, body) = discover(shared.to_str().expect("utf8"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let found: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(found["host"], "web1");
    let entries = found["entries"].as_array().expect("entries");
    let entry = |name: &str| entries.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name}: {body}"));
    assert_eq!(entry("photos")["kind"], "dir");
    assert_eq!((entry("a.txt")["kind"].as_str(), entry("a.txt")["size"].as_u64()), (Some("file"), Some(5)));
    assert_eq!(entry("disk.qcow2")["disk_image"], true);
    assert_eq!(entry("link")["kind"], "link", "a link is shown, not followed");
    assert_eq!(entry(hostile)["kind"], "file", "a hostile name comes back as text");
    let vms = found["vms"].as_array().expect("vms");
    assert!(vms.iter().any(|v| v["domain"] == "web" && v["disks"].as_array().is_some_and(|d| d.len() == 2)), "{body}");

    // a VM the host defines and an item of that host protects: named so
    admin(&env, &["item", "add", "vm", "webvm", "--domain-xml", vm.xml.to_str().expect("utf8"), "--host", "web1"]);
    let (_, body) = discover(shared.to_str().expect("utf8"));
    let found: serde_json::Value = serde_json::from_str(&body).expect("json");
    let web = found["vms"].as_array().and_then(|v| v.iter().find(|v| v["domain"] == "web").cloned());
    assert_eq!(web.map(|v| v["item"].clone()), Some(serde_json::json!("webvm")), "{body}");
    // and the item list names its host
    let list: serde_json::Value =
        serde_json::from_str(&admin(&env, &["--output", "json", "item", "list"])).expect("json");
    let row = list.as_array().and_then(|l| l.iter().find(|r| r["name"] == "webvm").cloned()).expect("listed");
    assert_eq!(row["host"], "web1", "{row}");
    assert!(admin(&env, &["item", "list"]).lines().any(|l| l.starts_with("webvm") && l.contains(" web1 ")));

    // a folder the host cannot list: said so; a relative path: refused
    let (head, body) = discover("/no/such/folder");
    assert!(head.starts_with("HTTP/1.1 200") && body.contains("cannot list /no/such/folder"), "{head}\n{body}");
    let (head, body) = discover("relative/path");
    assert!(head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.1 422"), "{head}\n{body}");
    assert!(body.contains("not an absolute path"), "{body}");

    // a host that answers a discovery never asked of it: refused
    let host_token = identity(&env, "web1")["token"].as_str().expect("token").to_string();
    let forged = env.path("forged.json");
    std::fs::write(
        &forged,
        serde_json::json!({"host": "x", "path": "/", "entries": [], "libvirt_dir": "/", "vms": []}).to_string(),
    )
    .expect("forged");
    let (code, body) =
        attack("POST", &format!("{api}/host/discoveries/00112233445566778899aabbccddeeff"), &host_token, Some(&forged));
    assert_eq!(code, 403, "{body}");
    // and the admin's route is not a host's
    let (code, _) = attack("POST", &format!("{api}/hosts/web1/discover"), &host_token, Some(&forged));
    assert_eq!(code, 401);
}
