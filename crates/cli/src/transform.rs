//! The transform every command maps items with: the stack's deployed
//! `TransformSpec` by default, or `--transform FILE`, which must say the
//! same thing (a mis-deployed spec must not go unnoticed until cutover).

use anyhow::{anyhow, Result};
use relay_aws::operator::Aws;
use relay_core::decide::Check;
use relay_core::transform::{remove_mapping_supported, Declarative, Identity, Spec, Transform};

use crate::ctx::{explain, Ctx};

/// The transform and the source table's key names.
pub struct Loaded {
    pub transform: Box<dyn Transform>,
    pub source_keys: Vec<String>,
    /// Why the `--transform` file does not match the deployed spec.
    pub mismatch: Option<String>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("source_keys", &self.source_keys)
            .field("mismatch", &self.mismatch)
            .finish_non_exhaustive()
    }
}

/// Loads the transform; a `--transform` that differs from the deployed spec
/// is reported in `mismatch` (see [`load`] for commands that refuse it).
pub async fn load_checked<A: Aws>(ctx: &Ctx<A>) -> Result<Loaded> {
    let s = &ctx.stack;
    let src = ctx
        .aws
        .describe(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
    let deployed = s.transform_spec.as_deref();
    let (text, origin) = match &ctx.transform_file {
        Some(path) => (
            Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow!("cannot read the transform {}: {e}", path.display()))?,
            ),
            path.display().to_string(),
        ),
        None => (
            deployed.map(str::to_string),
            "the deployed TransformSpec".into(),
        ),
    };
    let mismatch = match (&ctx.transform_file, deployed) {
        (None, _) => None,
        (Some(path), deployed) => {
            let file = Spec::parse(text.as_deref().unwrap_or_default())
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let live = match deployed {
                Some(d) => Spec::parse(d).map_err(|e| {
                    anyhow!(
                        "the deployed TransformSpec of stack {} does not parse: {e}",
                        s.name
                    )
                })?,
                None => Spec::default(),
            };
            (file != live).then(|| {
                format!(
                    "{} differs from stack {}'s deployed TransformSpec ({}): the applier maps changes with the deployed one; redeploy with this spec or drop --transform",
                    path.display(),
                    s.name,
                    deployed.unwrap_or("none")
                )
            })
        }
    };
    let transform: Box<dyn Transform> = match text {
        None => Box::new(Identity {
            key_names: src.key_names.clone(),
        }),
        Some(t) => {
            Box::new(Declarative::parse(&t, &src.key_names).map_err(|e| anyhow!("{origin}: {e}"))?)
        }
    };
    // A spec whose target items cannot tell whose they are would fail
    // every change in the applier: refused before anything is written.
    relay_core::transform::owner_supported(transform.as_ref(), &src.key_names)
        .map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok(Loaded {
        transform,
        source_keys: src.key_names,
        mismatch,
    })
}

/// Loads the transform, refusing a `--transform` that differs from the
/// deployed spec.
pub async fn load<A: Aws>(ctx: &Ctx<A>) -> Result<Loaded> {
    let loaded = load_checked(ctx).await?;
    if let Some(why) = &loaded.mismatch {
        return Err(anyhow!("{why}"));
    }
    Ok(loaded)
}

/// The preflight line for the transform and the stream view.
pub fn remove_mapping_check(
    t: &dyn Transform,
    source_keys: &[String],
    view: Option<&str>,
) -> Check {
    match remove_mapping_supported(t, source_keys, view) {
        Ok(()) => Check::pass(
            "transform key derivation",
            format!(
                "target key {:?} from {:?}",
                t.target_key_names(),
                t.key_sources()
            ),
        ),
        Err(why) => Check::fail("transform key derivation", why),
    }
}
