//! Admin token and write keys in force. Configured ones win; otherwise Niyet generates
//! random ones on first start and keeps them in `<data_dir>/credentials.toml` (mode
//! 0600), so a server started with no configuration at all is still protected.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Config, ServerError};

/// What the server authenticates with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Bearer token of the admin API.
    pub admin_token: String,
    /// (source name, write key).
    pub write_keys: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    admin_token: String,
    default_write_key: String,
}

fn random_token(prefix: &str) -> Result<String, ServerError> {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).map_err(|e| ServerError::Io {
        context: "generating a key".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{prefix}_{hex}"))
}

/// Works out the credentials, generating and persisting missing ones.
pub fn resolve(cfg: &Config, data_dir: &Path) -> Result<Credentials, ServerError> {
    let path = data_dir.join("credentials.toml");
    let io = |context: String| move |e: std::io::Error| ServerError::Io { context, source: e };
    let needs_generated = cfg.admin_token.is_none() || cfg.sources.is_empty();
    let stored = if needs_generated {
        match std::fs::read_to_string(&path) {
            Ok(t) => Some(toml::from_str::<Stored>(&t).map_err(|e| ServerError::Io {
                context: format!("reading {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = Stored {
                    admin_token: random_token("nyt_admin")?,
                    default_write_key: random_token("nyt_wk")?,
                };
                let text = toml::to_string(&s).unwrap_or_default();
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                        .map_err(io(format!("protecting {}", tmp.display())))?;
                }
                std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))?;
                Some(s)
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        }
    } else {
        None
    };
    let admin_token = match (&cfg.admin_token, &stored) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s.admin_token.clone(),
        (None, None) => unreachable_token(),
    };
    let write_keys = if cfg.sources.is_empty() {
        stored
            .map(|s| vec![("default".to_string(), s.default_write_key)])
            .unwrap_or_default()
    } else {
        cfg.sources
            .iter()
            .map(|s| (s.name.clone(), s.write_key.clone()))
            .collect()
    };
    Ok(Credentials {
        admin_token,
        write_keys,
    })
}

// `stored` is always present when no admin token is configured.
fn unreachable_token() -> String {
    String::new()
}
