//! Name rules, as Azure's for Recovery Services vaults.

use crate::error::{Result, ServiceError};

pub const VAULT_NAME_RULE: &str =
    "a vault name has 2 to 50 characters, begins with a letter, and holds only letters, digits and hyphens";
pub const ITEM_NAME_RULE: &str = "an item name has 1 to 100 characters, begins with a letter or digit, and holds only letters, digits, hyphens, underscores and dots";

/// # Errors
/// `Invalid` quoting the rule.
pub fn validate_vault_name(name: &str) -> Result<()> {
    let ok = (2..=50).contains(&name.chars().count())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok { Ok(()) } else { Err(ServiceError::Invalid(format!("invalid vault name {name:?}: {VAULT_NAME_RULE}"))) }
}

/// # Errors
/// `Invalid` quoting the rule.
pub fn validate_item_name(name: &str) -> Result<()> {
    let ok = (1..=100).contains(&name.chars().count())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(ServiceError::Invalid(format!("invalid item name {name:?}: {ITEM_NAME_RULE}"))) }
}

pub const POLICY_NAME_RULE: &str = "a policy name has 1 to 100 characters, begins with a letter or digit, and holds only letters, digits, hyphens, underscores and dots";

/// Policy names follow the item names' rule, and say they are a policy's.
///
/// # Errors
/// `Invalid` quoting the rule.
pub fn validate_policy_name(name: &str) -> Result<()> {
    validate_item_name(name)
        .map_err(|_| ServiceError::Invalid(format!("invalid policy name {name:?}: {POLICY_NAME_RULE}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_policy_name_is_called_a_policy_name_not_an_item_name() {
        let err = validate_policy_name("bad name").expect_err("space").to_string();
        assert!(err.contains("invalid policy name") && !err.contains("item"), "{err}");
    }

    #[test]
    fn vault_names_follow_azure_rules() {
        for good in ["ab", "vault-1", "A", "a-b-c"].iter().filter(|n| n.len() >= 2) {
            assert!(validate_vault_name(good).is_ok(), "{good}");
        }
        let fifty = "a".repeat(50);
        assert!(validate_vault_name(&fifty).is_ok());
        for bad in ["a", "1vault", "-ab", "my_vault", "vault.x", "vault x", "", &"a".repeat(51)] {
            let err = validate_vault_name(bad).expect_err(bad).to_string();
            assert!(err.contains("2 to 50 characters"), "{err}");
        }
    }

    #[test]
    fn item_names() {
        assert!(validate_item_name("home.docs_2").is_ok());
        assert!(validate_item_name("9lives").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(101)] {
            assert!(validate_item_name(bad).is_err(), "{bad}");
        }
    }
}
