//! The lifetime-value model that rules' `clv` and `p_alive` read.
//!
//! A model is published through the log (`niyet.clv_model`, written by
//! [`crate::Pipeline::publish_clv`]), so live processing and every replay apply it at the
//! same point. When the router reaches it, the model replaces the one in force and every
//! profile's segments are evaluated again. It is also kept in `state/clv-model.json` with
//! its offset, so a restart from a snapshot taken after it has it back (one taken before
//! it gets it from the replay).

use std::path::Path;
use std::sync::Arc;

use niyet_engine::segments::ClvModel;
use serde::{Deserialize, Serialize};

use crate::{Op, PipelineError, Router};

#[derive(Serialize, Deserialize)]
struct Kept {
    offset: u64,
    model: ClvModel,
}

/// The kept model, if it was published before `offset`.
pub(crate) fn load(state_dir: &Path, offset: u64) -> Option<ClvModel> {
    let k: Kept =
        serde_json::from_slice(&std::fs::read(state_dir.join("clv-model.json")).ok()?).ok()?;
    (k.offset < offset).then_some(k.model)
}

impl crate::Pipeline {
    /// Publishes a lifetime-value model for rules to read; returns once every profile's
    /// segments were evaluated under it.
    pub fn publish_clv(
        &self,
        model: &ClvModel,
        now_ms: i64,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, PipelineError> {
        self.act(
            serde_json::json!({"type": "niyet.clv_model", "model": model}),
            now_ms,
            timeout,
        )
    }

    /// Whether a segment in force reads the lifetime-value model (`clv`, `p_alive`).
    pub fn segments_read_lifetime_value(&self) -> bool {
        self.shared.segments.read().is_ok_and(|s| {
            (0..s.set.len()).any(|i| {
                niyet_rules::metrics_read(s.set.rule(i))
                    .iter()
                    .any(|m| niyet_rules::METRICS.contains(&m.as_str()))
            })
        })
    }

    /// The model in force.
    pub fn clv_model(&self) -> Option<Arc<ClvModel>> {
        self.shared.segments.read().ok()?.clv.read().ok()?.clone()
    }
}

impl Router {
    pub(crate) fn publish_clv(
        &mut self,
        offset: u64,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<serde_json::Value, String> {
        #[derive(Deserialize)]
        struct Action {
            model: ClvModel,
        }
        let a: Action = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        self.flush();
        {
            let segs = self.sh.segments.read().map_err(|_| "stopped")?;
            *segs.clv.write().map_err(|_| "stopped")? = Some(Arc::new(a.model.clone()));
        }
        let kept = serde_json::to_vec(&Kept {
            offset,
            model: a.model.clone(),
        })
        .map_err(|e| e.to_string())?;
        let path = self.sh.cfg.state_dir.join("clv-model.json");
        let written = std::fs::create_dir_all(&self.sh.cfg.state_dir)
            .and_then(|()| std::fs::write(path.with_extension("tmp"), &kept))
            .and_then(|()| std::fs::rename(path.with_extension("tmp"), &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "keeping the lifetime-value model failed");
        }
        let reads = self
            .sh
            .segments
            .read()
            .map(|s| s.set.reads_metrics())
            .unwrap_or(false);
        if reads {
            for i in 0..self.senders.len() {
                self.send_to(i, Op::Refresh(now_ms));
            }
            self.flush();
        }
        Ok(serde_json::json!({"version": a.model.version, "evaluated": reads}))
    }
}
