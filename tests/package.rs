//! What crates.io shows of the crate: README links that resolve there (absolute, since relative
//! links do not render), and a CHANGELOG entry for the version being published.

const README: &str = include_str!("../README.md");
const CHANGELOG: &str = include_str!("../CHANGELOG.md");

/// Targets of the markdown links `[text](target)` in `md`.
fn link_targets(md: &str) -> Vec<&str> {
    md.match_indices("](").filter_map(|(i, _)| md[i + 2..].split_once(')').map(|(t, _)| t)).collect()
}

#[test]
fn readme_links_are_absolute() {
    let links = link_targets(README);
    assert!(links.len() >= 5, "expected the README's links to the docs and examples, found {links:?}");
    let relative: Vec<&&str> = links
        .iter()
        .filter(|t| !(t.starts_with("https://") || t.starts_with("http://") || t.starts_with('#')))
        .collect();
    assert!(relative.is_empty(), "relative README links do not render on crates.io: {relative:?}");
}

#[test]
fn changelog_has_this_version() {
    let heading = format!("## [{}] - ", env!("CARGO_PKG_VERSION"));
    assert!(CHANGELOG.contains(&heading), "CHANGELOG.md has no `{heading}…` section");
    assert!(CHANGELOG.contains("## [Unreleased]"), "CHANGELOG.md lacks the [Unreleased] section");
    let link = format!("[{}]: https://github.com/consul-lock/consul-lock/", env!("CARGO_PKG_VERSION"));
    assert!(CHANGELOG.contains(&link), "CHANGELOG.md lacks the link for the version heading");
}

#[test]
fn link_targets_are_found() {
    assert_eq!(link_targets("a [x](https://a/b) and [`y`](#z)."), ["https://a/b", "#z"]);
}
