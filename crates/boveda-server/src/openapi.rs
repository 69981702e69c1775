//! The OpenAPI document, made from the route table: every route with its
//! parameters, the permission it needs and its request body's shape.

use serde_json::{Value, json};

use crate::routes::RouteSpec;

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document served at `/api/v1/openapi.json` and kept as
/// `docs/openapi.json`, made from the routes that need a token (`specs`)
/// and those anyone may call (`public`).
pub fn document(specs: &[RouteSpec], public: &[(&str, &str)]) -> Value {
    let mut paths = serde_json::Map::new();
    for spec in specs {
        let entry = paths.entry(spec.path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": spec.summary,
            "operationId": format!("{} {}", spec.method, spec.path),
            "security": [{"token": []}],
            "parameters": parameters(spec.path),
            "x-boveda-permission": spec.permission,
            "x-boveda-scope": spec.scope,
            "responses": {
                "200": {"description": "Done", "content": {"application/json": {}}},
                "400": error_response("A request field is at fault (`field`)"),
                "401": error_response("No valid token"),
                "403": error_response("The token's role or scope does not allow it"),
                "404": error_response("Not found"),
            }
        });
        if let Some(body) = spec.body {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}
            });
        }
        entry[spec.method.as_str().to_ascii_lowercase()] = op;
    }
    for &(method, path) in public {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = json!({
            "summary": match path {
                "/api/v1/login" => "Open a portal session with a token",
                "/api/v1/session" => "The portal session of the cookie",
                "/api/v1/logout" => "End the portal session",
                "/api/v1/openapi.json" => "This document",
                "/api/v1/vaults/{vault}/hosts/register" => "Register a host with single-use credentials (docs/FLEET.md)",
                "/api/v1/vaults/{vault}/host/items" => "A registered host's items (host token)",
                "/api/v1/vaults/{vault}/host/work" => "The backups the server asks of the host (?wait= seconds, at most 20; host token)",
                "/api/v1/vaults/{vault}/host/jobs" => "A registered host starts a backup job of its item (host token)",
                "/api/v1/vaults/{vault}/host/jobs/{job}/chunks" => "The chunks the vault holds of the host's (host token)",
                "/api/v1/vaults/{vault}/host/jobs/{job}/archive" => "The point a restore onto the host was granted, as a tar stream, once (host token)",
                "/api/v1/vaults/{vault}/host/jobs/{job}/objects/{*name}" => "Add a pack or index object the host sealed, create-only (host token)",
                "/api/v1/vaults/{vault}/host/discoveries/{request}" => "A host's answer to a discovery the server asked of it (host token)",
                "/api/v1/vaults/{vault}/host/jobs/{job}/grants" => "How to upload one pack: a create-only grant straight to the store, or through the server (host token)",
                _ => "Report a host's backup progress, end or failure (host token)",
            },
            "operationId": format!("{method} {path}"),
            "security": if path.contains("/host/") { json!([{"host": []}]) } else { json!([]) },
            "responses": {"200": {"description": "Done"}}
        });
    }
    let object = |required: &[&str], props: Value| json!({"type": "object", "required": required, "properties": props});
    let string = json!({"type": "string"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "boveda", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Vaults, protected items, policies, recovery points, jobs and alerts of a boveda server."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "description": "A token from `boveda token create`"},
                "host": {"type": "http", "scheme": "bearer", "description": "A registered host's token (bvh_...), from its registration"}},
            "schemas": {
                "Error": object(&["code", "message"], json!({"code": string, "message": string, "field": string, "remedy": {"type": "object"}})),
                "NewVault": object(&["name", "store"], json!({"name": string, "store": string, "location": string,
                    "redundancy": {"enum": ["lrs", "grs"]}, "secondary": string, "pack_size_mib": {"type": "integer"},
                    "compression_level": {"type": "integer"}, "create_container": {"type": "boolean"},
                    "object_lock": {"enum": ["compliance", "governance"]}, "lock_margin_days": {"type": "integer"}})),
                "NewItem": {"oneOf": [
                    object(&["kind", "name", "paths"], json!({"kind": {"const": "files"}, "name": string, "paths": strings, "excludes": strings, "host": string})),
                    object(&["kind", "name", "path"], json!({"kind": {"const": "disk"}, "name": string, "path": string, "host": string})),
                    object(&["kind", "name", "definition"], json!({"kind": {"const": "vm"}, "name": string, "definition": string, "qmp": string, "guest_agent": string})),
                ]},
                "PolicyChoice": object(&["policy"], json!({"policy": string})),
                "BackupNow": object(&[], json!({"retain_until": string})),
                "VaultUpdate": object(&[], json!({"soft_delete_days": {"type": "integer"}, "immutability": {"enum": ["disabled", "enabled", "locked"]}, "confirm": string, "soft_delete_always_on": {"type": "boolean"}, "webhook": {"type": ["string", "null"], "description": "null: no webhook; left out: unchanged"}, "store_retries": {"type": "integer"}, "store_retry_max_wait_secs": {"type": "integer"}, "parallel_requests": {"type": "integer"}, "replication_lag_alert_mins": {"type": "integer"}, "shipping_address": {"type": ["string", "null"]}, "replicate_during_backup": {"type": "boolean"}})),
                "RestoreTarget": object(&["point", "target"], json!({"point": string, "target": string, "paths": strings, "format": {"enum": ["raw", "qcow2"]},
                    "vm": {"type": "object", "properties": {"as": {"enum": ["disks", "new_vm", "replace_disks"]}, "name": string, "start": {"type": "boolean"}, "confirm": string}}})),
                "VerifyNow": object(&[], json!({"point": string, "sample_percent": {"type": "integer", "minimum": 1, "maximum": 100}})),
                "PolicyPatch": object(&[], json!({"name": string, "frequency": {"enum": ["daily", "weekly", "hourly"]}, "days": strings, "times": strings,
                    "time_zone": string, "every_hours": {"enum": [4, 6, 8, 12]}, "window_start": string, "window_hours": {"type": "integer"},
                    "daily_keep": {"type": "integer"}, "weekly_keep": {"type": "integer"}, "weekly_on": strings,
                    "monthly_keep": {"type": "integer"}, "monthly_on": string, "yearly_keep": {"type": "integer"},
                    "yearly_month": {"type": "integer"}, "yearly_on": string, "drop_rules": strings, "verify_every_days": {"type": "integer", "minimum": 0, "maximum": 366}})),
                "NewCredentials": object(&[], json!({"expires_hours": {"type": "integer"}, "server": string})),
                "DiscoverOrder": object(&["path"], json!({"path": string, "libvirt_dir": string})),
                "BindGuard": object(&["guard", "name"], json!({"guard": string, "name": string})),
                "GuardApproval": object(&[], json!({"approval": string, "expires": string, "signature": string})),
                "EmailSettings": object(&["server", "port", "from", "to"], json!({"server": string, "port": {"type": "integer"},
                    "security": {"enum": ["starttls", "tls", "none"]}, "username": string, "password": string, "from": string, "to": strings,
                    "ca_certificate": string})),
                "NewToken": object(&["role"], json!({"role": {"enum": ["Reader", "Operator", "Contributor", "SecurityAdmin"]}, "items": strings,
                    "description": string, "expires": string})),
            }
        }
    })
}
