//! Where etcd is: `fleet.endpoints` or the file `fleet.endpoints_file`
//! names (one URL per line or comma-separated, `#` comments), checked to
//! use one scheme for all.

use http::Uri;

use super::EtcdError;
use crate::failover::fleet::FleetError;

/// Reads `fleet.endpoints_file`: URLs separated by newlines, commas or
/// spaces; `#` starts a comment.
pub(crate) fn read_endpoints(path: &std::path::Path) -> Result<Vec<Uri>, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FleetError::Etcd(EtcdError::EndpointsFile(format!(
            "cannot read {}: {e}",
            path.display()
        )))
    })?;
    parse_endpoints(&text)
        .map_err(|e| FleetError::Etcd(EtcdError::EndpointsFile(format!("{}: {e}", path.display()))))
}

/// The endpoints in the text of an endpoints file (also `failway check`'s).
pub(crate) fn parse_endpoints(text: &str) -> Result<Vec<Uri>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for word in line
            .split([',', ' ', '\t'])
            .filter(|w| !w.trim().is_empty())
        {
            let word = word.trim();
            let uri: Uri = word
                .parse()
                .map_err(|_| format!("{word:?} is not a URL (e.g. \"https://etcd-0:2379\")"))?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            if !scheme_ok || uri.authority().is_none() || uri.path() != "/" {
                return Err(format!(
                    "{word:?} is not an http:// or https:// origin (e.g. \"https://etcd-0:2379\")"
                ));
            }
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err("an endpoint must not carry user info; use fleet.username".into());
            }
            out.push(uri);
        }
    }
    if out.is_empty() {
        return Err("lists no endpoint".into());
    }
    Ok(out)
}

/// One scheme for all: one client setup serves every endpoint. `key` names
/// where the list came from.
pub(super) fn check_endpoints(list: &[Uri], key: &'static str) -> Result<(), FleetError> {
    if list.is_empty() {
        return Err(FleetError::Config {
            key,
            message: "must list at least one etcd endpoint",
        });
    }
    let https = list
        .iter()
        .filter(|u| u.scheme_str() == Some("https"))
        .count();
    if https != 0 && https != list.len() {
        return Err(FleetError::Config {
            key,
            message: "mixes http and https endpoints; use one scheme for all",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::origin;
    use super::*;

    #[test]
    fn endpoints_file_takes_lines_commas_and_comments() {
        let list = parse_endpoints(
            "# etcd members\nhttps://etcd-0:2379, https://etcd-1:2379\n\n https://etcd-2:2379 # last\n",
        )
        .expect("parses");
        let names: Vec<String> = list.iter().map(origin).collect();
        assert_eq!(
            names,
            [
                "https://etcd-0:2379",
                "https://etcd-1:2379",
                "https://etcd-2:2379"
            ]
        );
    }

    #[test]
    fn endpoints_file_errors_name_the_bad_entry() {
        let err = parse_endpoints("etcd-0:2379\n").expect_err("no scheme");
        assert!(err.contains("\"etcd-0:2379\""), "{err}");
        let err = parse_endpoints("https://u:p@etcd:2379").expect_err("user info");
        assert!(err.contains("fleet.username"), "{err}");
        assert!(!err.contains("u:p"), "{err}");
        assert_eq!(
            parse_endpoints("# none\n").expect_err("empty"),
            "lists no endpoint"
        );
    }
}
