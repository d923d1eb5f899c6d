//! The control side of applications: what tests and the `/_sim/orders` and `/_sim/apply/settings`
//! endpoints do to orders ("the record now exists", "validation failed") and to the settings.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApplySettings, SimOrder, advance, lock, order};
use crate::manage::ControlError;
use crate::state::SimState;
use tencent_ssl::apply::STATUS_FAILED;

impl SimState {
    /// Every order, by certificate id.
    pub fn orders(&self) -> Vec<SimOrder> {
        advance(self);
        lock(&self.applications.orders).values().cloned().collect()
    }

    pub fn apply_settings(&self) -> ApplySettings {
        lock(&self.applications.settings).clone()
    }

    pub fn set_apply_settings(&self, settings: ApplySettings) {
        *lock(&self.applications.settings) = settings;
    }

    /// "The record now exists": a pending DNS or FILE order issues (DNS_AUTO ones issue by themselves).
    pub fn validate_order(&self, id: &str) -> Result<SimOrder, ControlError> {
        {
            let mut orders = lock(&self.applications.orders);
            let order = orders
                .get_mut(id)
                .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
            if order.state != "pending" {
                return Err(ControlError::Invalid(format!(
                    "order {id} is {}, not pending",
                    order.state
                )));
            }
            order.validated = true;
        }
        advance(self);
        order(self, id).ok_or_else(|| ControlError::NotFound(id.to_string()))
    }

    /// Ends a pending order: status 2 (审核失败) with `reason` as its `StatusMsg`.
    pub fn fail_order(&self, id: &str, reason: &str) -> Result<SimOrder, ControlError> {
        {
            let mut orders = lock(&self.applications.orders);
            let order = orders
                .get_mut(id)
                .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
            if order.state != "pending" {
                return Err(ControlError::Invalid(format!(
                    "order {id} is {}, not pending",
                    order.state
                )));
            }
            order.state = "failed".to_string();
            order.failure = Some(reason.to_string());
        }
        self.set_certificate_status(id, STATUS_FAILED)?;
        order(self, id).ok_or_else(|| ControlError::NotFound(id.to_string()))
    }
}

/// The control endpoints of applications (merged into the simulator's router).
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_sim/orders", get(list_orders))
        .route("/_sim/orders/{id}/validate", post(validate))
        .route("/_sim/orders/{id}/fail", post(fail))
        .route("/_sim/apply/settings", get(get_settings).post(put_settings))
}

type ControlAnswer = (StatusCode, Json<Value>);

fn answer(result: Result<SimOrder, ControlError>) -> ControlAnswer {
    match result {
        Ok(order) => (StatusCode::OK, Json(json!(order))),
        Err(err @ ControlError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": err.to_string()})),
        ),
        Err(err) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": err.to_string()})),
        ),
    }
}

async fn list_orders(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({ "Orders": state.orders() }))
}

async fn validate(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> ControlAnswer {
    answer(state.validate_order(&id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    reason: Option<String>,
}

async fn fail(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ControlAnswer {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<FailRequest>(&body) {
            Ok(request) => request.reason,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!("bad fail request: {e}")})),
                );
            }
        }
    };
    let reason =
        reason.unwrap_or_else(|| "域名验证超时，订单自动关闭，请您重新进行证书申请".to_string());
    answer(state.fail_order(&id, &reason))
}

async fn get_settings(State(state): State<Arc<SimState>>) -> Json<ApplySettings> {
    Json(state.apply_settings())
}

async fn put_settings(
    State(state): State<Arc<SimState>>,
    Json(settings): Json<ApplySettings>,
) -> Json<ApplySettings> {
    state.set_apply_settings(settings);
    Json(state.apply_settings())
}
