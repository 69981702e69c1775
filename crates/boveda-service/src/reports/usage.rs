//! `boveda usage`: protected instances and stored bytes per item, and an
//! estimated monthly cost from a price table, as Azure Backup bills them.
//!
//! - **Front-end size**: the bytes of the item's newest point.
//! - **Protected instances**: up to 50 GB is one small instance; over
//!   50 GB up to 500 GB one instance; above that one more instance per
//!   started 500 GB.
//! - **Stored bytes**: what the item's points occupy in the store after
//!   deduplication and compression (a chunk shared by two items counts for
//!   each; the vault total counts it once).

use std::collections::HashSet;
use std::path::Path;

use boveda_vault::{ChunkId, RecoveryPoint, Vault};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::items::list_items;

const GB: u64 = 1_000_000_000;

/// Monthly prices; defaults are Azure Backup's list prices in USD, as
/// documented in docs/USAGE.md. Any field may be changed in `prices.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PriceTable {
    pub currency: String,
    /// An instance of up to 50 GB.
    pub small_instance: f64,
    /// An instance over 50 GB, per started 500 GB.
    pub instance_per_500_gb: f64,
    /// Stored data, per GB and month.
    pub lrs_per_gb: f64,
    pub grs_per_gb: f64,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable {
            currency: "USD".into(),
            small_instance: 5.0,
            instance_per_500_gb: 10.0,
            lrs_per_gb: 0.0224,
            grs_per_gb: 0.0448,
        }
    }
}

impl PriceTable {
    /// Reads a price table; fields left out keep their defaults.
    ///
    /// # Errors
    /// `Config` naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServiceError::Config { path: path.display().to_string(), reason: e.to_string() })?;
        let table: PriceTable = serde_json::from_str(&text)
            .map_err(|e| ServiceError::Config { path: path.display().to_string(), reason: e.to_string() })?;
        let prices = [table.small_instance, table.instance_per_500_gb, table.lrs_per_gb, table.grs_per_gb];
        if prices.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(ServiceError::Config {
                path: path.display().to_string(),
                reason: "prices must be numbers of 0 or more".into(),
            });
        }
        Ok(table)
    }

    /// The table a user chose: `file` when given, else `prices.json` in
    /// boveda's configuration folder when it exists, else the built-in one.
    ///
    /// # Errors
    /// As [`PriceTable::load`].
    pub fn chosen(file: Option<&Path>) -> Result<Self> {
        let default_file = crate::runtime::registry::config_dir().join("prices.json");
        match file {
            Some(p) => Self::load(p),
            None if default_file.exists() => Self::load(&default_file),
            None => Ok(Self::default()),
        }
    }
}

/// The instance band of a front-end size and how many instances it bills.
pub fn instance_band(front_end: u64) -> (String, u64) {
    if front_end <= 50 * GB {
        ("up to 50 GB".into(), 1)
    } else if front_end <= 500 * GB {
        ("over 50 GB up to 500 GB".into(), 1)
    } else {
        let n = front_end.div_ceil(500 * GB);
        (format!("over 500 GB: {n} x 500 GB"), n)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemUsage {
    pub item: String,
    pub state: String,
    pub front_end_bytes: u64,
    pub band: String,
    pub instances: u64,
    pub recovery_points: usize,
    pub stored_bytes: u64,
    pub monthly_cost: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub items: Vec<ItemUsage>,
    /// Every chunk the vault's points use, counted once.
    pub stored_bytes: u64,
    pub monthly_cost: f64,
    pub prices: PriceTable,
    /// Trees that could not be read: what they hold is not counted.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

/// Computes the usage report. A damaged tree is named in `warnings` and
/// what it holds left out: one damaged object must not take the report
/// down for every user of the vault.
///
/// # Errors
/// A store error.
pub fn usage(vault: &Vault, prices: &PriceTable) -> Result<Usage> {
    // it walks every point's trees, long on a large vault: in a pool of
    // its own, so that the short reads of a server's requests never wait
    // behind it
    boveda_engine::in_own_pool("usage", || usage_walk(vault, prices))
}

fn usage_walk(vault: &Vault, prices: &PriceTable) -> Result<Usage> {
    let index = vault.load_index()?;
    let points = vault.list_points()?;
    let mut warnings = Vec::new();
    let mut damaged = |p: &RecoveryPoint, tree: ChunkId, e: boveda_vault::VaultError| {
        warnings.push(format!(
            "item {} point {}: tree {} cannot be read ({e}); what it holds is not counted",
            p.item_name,
            p.id.short(),
            tree.short()
        ));
    };
    let mut all_chunks: HashSet<ChunkId> = HashSet::new();
    let per_gb = if vault.settings().redundancy == "grs" { prices.grs_per_gb } else { prices.lrs_per_gb };
    let stored = |chunks: &HashSet<ChunkId>| -> u64 {
        chunks.iter().filter_map(|c| index.get(c)).map(|r| u64::from(r.length)).sum()
    };
    let mut out = Vec::new();
    let mut total_cost = 0.0;
    for item in list_items(vault)? {
        let mine: Vec<RecoveryPoint> = points.iter().filter(|p| p.item_id == item.id).cloned().collect();
        let front_end = mine.last().map_or(0, |p| p.stats.bytes);
        let (band, instances) = instance_band(front_end);
        let chunks = boveda_vault::referenced_chunks_lenient(vault, &index, &mine, &mut damaged);
        let stored_bytes = stored(&chunks);
        all_chunks.extend(chunks);
        let instance_fee = if front_end <= 50 * GB { prices.small_instance } else { prices.instance_per_500_gb };
        let cost = instance_fee * instances as f64 + stored_bytes as f64 / GB as f64 * per_gb;
        total_cost += cost;
        out.push(ItemUsage {
            item: item.name.clone(),
            state: item.protection.state.as_str().into(),
            front_end_bytes: front_end,
            band,
            instances,
            recovery_points: mine.len(),
            stored_bytes,
            monthly_cost: cost,
        });
    }
    let stored_bytes = stored(&all_chunks);
    warnings.sort();
    warnings.dedup();
    Ok(Usage { items: out, stored_bytes, monthly_cost: total_cost, prices: prices.clone(), warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_bands_follow_azure() {
        assert_eq!(instance_band(0).1, 1);
        assert_eq!(instance_band(50 * GB), ("up to 50 GB".into(), 1));
        assert_eq!(instance_band(50 * GB + 1), ("over 50 GB up to 500 GB".into(), 1));
        assert_eq!(instance_band(500 * GB).1, 1);
        assert_eq!(instance_band(500 * GB + 1).1, 2);
        assert_eq!(instance_band(1000 * GB).1, 2);
        assert_eq!(instance_band(1000 * GB + 1).1, 3);
    }
}
