//! Bearer-token secrets as a deployment names them: inline, from an environment
//! variable, or from a file. A missing token file may be generated (random 256-bit
//! secret, mode 0600) so that a fresh deployment is protected from its first start and
//! every process on the machine reads the same secret from the same path.

use std::io::Write;
use std::path::Path;

use edgebox_config::TokenSecret;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token {name:?}: environment variable {var} is not set")]
    MissingEnv { name: String, var: String },
    #[error("token {name:?}: {action} {path}: {source}")]
    File {
        name: String,
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token {name:?}: the secret is empty")]
    Empty { name: String },
}

/// Reads a token's secret. With `generate`, a missing file is created with a random
/// secret; without it (node agents, the CLI), a missing file is an error.
pub fn resolve(name: &str, secret: &TokenSecret, generate: bool) -> Result<String, TokenError> {
    let value = match secret {
        TokenSecret::Inline(value) => value.clone(),
        TokenSecret::Env(var) => std::env::var(var).map_err(|_| TokenError::MissingEnv {
            name: name.to_owned(),
            var: var.clone(),
        })?,
        TokenSecret::File(path) => read_or_generate(name, path, generate)?,
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(TokenError::Empty {
            name: name.to_owned(),
        });
    }
    Ok(value)
}

fn read_or_generate(name: &str, path: &Path, generate: bool) -> Result<String, TokenError> {
    let error = |action, source| TokenError::File {
        name: name.to_owned(),
        action,
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && generate => {}
        Err(err) => return Err(error("read", err)),
    }
    if let Some(parent) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(parent)
            .map_err(|err| error("create directory for", err))?;
    }
    let secret: String = {
        let bytes: [u8; 32] = rand::random();
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    };
    // Written whole to a private temp file, then linked into place: `link` never
    // replaces, so the first process wins and no reader ever sees a partial file (with
    // `create_new` + write, another edge starting at the same moment could read it
    // empty).
    let temp = path.with_extension(format!(
        "tmp.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(format!("{secret}\n").as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            tracing::info!(token = name, path = %path.display(), "generated token secret");
            Ok(secret)
        }
        // Another process generated it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map_err(|err| error("read", err))
        }
        Err(err) => Err(error("create", err)),
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
