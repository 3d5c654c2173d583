//! Which secrets a configuration refers to: the names in its `${secret:NAME…}`
//! references, found without fetching anything (so this part needs no AWS SDK).

use std::collections::BTreeSet;

/// The names of every secret a configuration text refers to.
pub fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${secret:") {
        let after = &rest[i + "${secret:".len()..];
        match after.find('}') {
            Some(end) => {
                let reference = &after[..end];
                let name = reference.split('#').next().unwrap_or_default();
                if !name.is_empty() {
                    out.insert(name.to_string());
                }
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

/// The secrets a gateway configuration needs: references in its string values (not in
/// comments), leaving out backends with `enabled = false`. Text that is not valid TOML
/// falls back to a scan of the raw text (the config loader reports the TOML error).
pub fn config_references(text: &str) -> BTreeSet<String> {
    match text.parse::<toml::Table>() {
        Ok(t) => value_references(&toml::Value::Table(t), Tables::Enabled),
        Err(_) => referenced_names(text),
    }
}

/// Which tables of a configuration [`value_references`] looks into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// Every table.
    All,
    /// Every table but those with `enabled = false` (and what they hold).
    Enabled,
}

/// The names of every secret the string values of a parsed configuration refer to
/// (comments are gone once parsed). The one walk of a configuration for secret names:
/// the gateway and the sidecar both use it.
pub fn value_references(value: &toml::Value, tables: Tables) -> BTreeSet<String> {
    fn walk(v: &toml::Value, tables: Tables, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::String(s) => out.extend(referenced_names(s)),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, tables, out)),
            toml::Value::Table(t) => {
                let disabled = t.get("enabled").and_then(toml::Value::as_bool) == Some(false);
                if tables == Tables::Enabled && disabled {
                    return;
                }
                t.values().for_each(|x| walk(x, tables, out));
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(value, tables, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_references_skip_comments_and_disabled_backends() {
        let text = "# a comment naming ${secret:NAME}\nkey = \"${secret:used#k}\"\n[[backend]]\nname = \"off\"\nenabled = false\nheaders = { A = \"${secret:off}\" }\n[[backend]]\nname = \"on\"\nheaders = { A = \"${secret:on}\" }\n";
        assert_eq!(
            config_references(text).into_iter().collect::<Vec<_>>(),
            vec!["on".to_string(), "used".to_string()]
        );
    }

    #[test]
    fn all_tables_include_disabled_ones() {
        let v: toml::Value = toml::from_str(
            "[a]\nenabled = false\nk = \"${secret:off}\"\n[b]\nk = [\"${secret:on#x}\"]\n",
        )
        .unwrap();
        let names = |t| value_references(&v, t).into_iter().collect::<Vec<_>>();
        assert_eq!(
            names(Tables::All),
            vec!["off".to_string(), "on".to_string()]
        );
        assert_eq!(names(Tables::Enabled), vec!["on".to_string()]);
    }

    #[test]
    fn finds_references() {
        let names = referenced_names(
            "a = \"${secret:db#url}\"\nb = \"Bearer ${secret:grafana}\"\nc = \"${env:X}\"\nd = \"${secret:db#user}\"",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["db".to_string(), "grafana".to_string()]
        );
    }
}
