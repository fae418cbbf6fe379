//! The README's `--output json` table, checked against what the binary
//! prints: a field the README lists must be there, and a field the binary
//! prints must be in the README. A doc sentence the code does not back is a
//! defect.

use std::collections::BTreeSet;

use serde_json::Value;

/// The fields a README row documents: always present (outside parentheses),
/// and sometimes present (inside parentheses: dry runs, pending states).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Documented {
    pub always: BTreeSet<String>,
    pub sometimes: BTreeSet<String>,
}

/// The `--output json` row for a command line (`["seed", "--method",
/// "scan", ...]`), from README text.
pub fn documented(readme: &str, args: &[&str]) -> Option<Documented> {
    let mut name = args.first()?.to_string();
    if name == "dlq" {
        name = format!("dlq {}", args.get(1)?);
    }
    let scan = args.windows(2).any(|w| w == ["--method", "scan"]);
    if scan && (name == "seed" || name == "restart") {
        name = format!("{name} --method scan");
    }
    let load = args.contains(&"--load") || args.contains(&"--from-export");
    if load && name == "seed" {
        name = "seed --method export --load".into();
    }
    if args.contains(&"--print-import-spec") {
        name = format!("{name} --print-import-spec");
    }
    let table = readme.split("### `--output json`").nth(1)?;
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let (head, fields) = (cells.first()?, cells.get(1)?);
        let names: Vec<String> = ticked(head);
        if names.contains(&name) {
            return Some(parse_fields(fields));
        }
    }
    None
}

/// Backticked words of `s`.
fn ticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(|w| w.trim_end_matches("[]").to_string())
        .collect()
}

/// Top-level fields of a row: nested `{…}` lists are skipped.
fn parse_fields(cell: &str) -> Documented {
    let mut d = Documented::default();
    let (mut braces, mut parens) = (0usize, 0usize);
    let mut word: Option<String> = None;
    for c in cell.chars() {
        match (c, &mut word) {
            ('`', Some(w)) => {
                let w = w.trim_end_matches("[]").to_string();
                if braces == 0 {
                    if parens == 0 {
                        d.always.insert(w);
                    } else {
                        d.sometimes.insert(w);
                    }
                }
                word = None;
            }
            ('`', None) => word = Some(String::new()),
            (c, Some(w)) => w.push(c),
            ('{', None) => braces += 1,
            ('}', None) => braces = braces.saturating_sub(1),
            ('(', None) => parens += 1,
            (')', None) => parens = parens.saturating_sub(1),
            _ => {}
        }
    }
    d
}

/// Panics naming the difference when `json` (the output of `args`) and the
/// README's row disagree. Dry runs print a plan instead of the results, so
/// only undocumented fields are checked for them.
pub fn check(args: &[&str], json: &Value) {
    let Value::Object(map) = json else { return };
    let readme = std::fs::read_to_string(crate::repo_root().join("README.md")).unwrap_or_default();
    let Some(doc) = documented(&readme, args) else {
        panic!("README.md documents no `--output json` fields for ddb-relay {args:?}");
    };
    let printed: BTreeSet<String> = map.keys().cloned().collect();
    let undocumented: Vec<&String> = printed
        .iter()
        .filter(|k| !doc.always.contains(*k) && !doc.sometimes.contains(*k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "ddb-relay {args:?} prints {undocumented:?}, which README.md does not list"
    );
    if map.get("dry_run") == Some(&Value::Bool(true)) {
        return;
    }
    let missing: Vec<&String> = doc.always.difference(&printed).collect();
    assert!(
        missing.is_empty(),
        "README.md lists {missing:?} for ddb-relay {args:?}, which it does not print"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_into_always_and_sometimes_fields() {
        let readme = "### `--output json`\n\n| command | fields |\n|---|---|\n\
            | `replay`, `restart` | `stack`, `checks[]` {`name`, `status` (`pass`\\|`fail`)}, `dry_run` (dry run: `plan`) |\n\
            | `seed --method scan`, `restart --method scan` | `copied` |\n\
            | `dlq list` | `count` |\n";
        let d = documented(readme, &["restart", "--dry-run"]).unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(d.always, set(&["stack", "checks", "dry_run"]));
        assert_eq!(d.sometimes, set(&["plan"]));
        let d = documented(readme, &["restart", "--method", "scan"]).unwrap();
        assert_eq!(d.always, set(&["copied"]));
        assert_eq!(
            documented(readme, &["dlq", "list"]).unwrap().always,
            set(&["count"])
        );
        assert!(documented(readme, &["status"]).is_none());
    }

    #[test]
    fn the_real_readme_documents_every_command() {
        let readme = std::fs::read_to_string(crate::repo_root().join("README.md")).unwrap();
        for cmd in [
            "preflight",
            "seed",
            "pause",
            "resume",
            "replay",
            "restart",
            "status",
            "watch",
            "cutover",
            "verify",
            "finish",
        ] {
            let d = documented(&readme, &[cmd]).unwrap_or_else(|| panic!("{cmd}"));
            assert!(d.always.contains("stack"), "{cmd}: {d:?}");
        }
        for args in [["dlq", "list"], ["dlq", "repair"], ["seed", "--method"]] {
            assert!(documented(&readme, &args).is_some(), "{args:?}");
        }
    }
}
