//! `background: true`: the response is answered at once (`queued`), runs on a tokio task that
//! saves it as it goes (in progress, then final), and can be cancelled with
//! `POST /v1/responses/{id}/cancel` while it runs. [`Running`] (in `AppState`) maps each
//! running response to the sender that cancels it; the task removes its own entry when it
//! ends. Cancelling drops the task's events, which cancels the engine request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::storage::{self, Save};
use super::types::*;
use super::{start, Caller};
use crate::api::auth::ApiKeyName;
use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::AppState;

/// One running background response.
struct Task {
    owner: String,
    /// Sent to cancel; answered with the cancelled response.
    cancel: oneshot::Sender<oneshot::Sender<ResponseObject>>,
}

/// The background responses still running, by id.
#[derive(Clone, Default)]
pub struct Running(Arc<Mutex<HashMap<String, Task>>>);

impl Running {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Task>) -> T) -> T {
        match self.0.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Starts `req` in the background and answers with its queued response.
pub async fn create(
    state: AppState,
    caller: Caller,
    req: CreateResponse,
) -> Result<Response, ApiError> {
    if req.store == Some(false) {
        return Err(ApiError::invalid(
            "background responses must be stored: store cannot be false with background",
            Some("background"),
        ));
    }
    if state.responses().is_none() {
        return Err(ApiError::invalid(
            "background responses are polled from the store, and this server stores nothing \
             (start it with a data directory)",
            Some("background"),
        ));
    }
    if req.stream == Some(true) {
        return Err(ApiError::invalid(
            "stream with background is not supported: poll GET /v1/responses/{id}",
            Some("stream"),
        ));
    }
    let save = Save {
        owner: caller.owner.clone(),
        store: true,
        conversation: storage::conversation_id(req.conversation.as_ref())?,
        input: Vec::new(),
    };
    let owner = caller.owner.clone();
    let mut run = start(&state, caller, req, None).await?;
    // The machine's first event carries the response as created.
    let Some(first) = run.events.next().await else {
        return Err(ApiError::Internal("the response produced no events".into()));
    };
    let Some(mut queued) = first.response().cloned() else {
        return Err(ApiError::Internal("the response did not start".into()));
    };
    queued.status = Status::Queued;
    // A background response nobody could poll is refused (500) rather than lost.
    storage::save(&state, &save, &queued).await?;
    let (tx, rx) = oneshot::channel();
    let id = run.id.clone();
    state
        .background()
        .with(|m| m.insert(id.clone(), Task { owner, cancel: tx }));
    tokio::spawn(drive(state, id, queued.clone(), save, run.events, rx));
    Ok(Json(queued).into_response())
}

/// Runs the response's events to the end (the run saves its terminal), saving each
/// lifecycle change; or, cancelled, saves it as `cancelled` and answers the canceller.
async fn drive(
    state: AppState,
    id: String,
    mut last: ResponseObject,
    save: Save,
    mut events: futures_util::stream::BoxStream<'static, ResponseEvent>,
    mut cancel: oneshot::Receiver<oneshot::Sender<ResponseObject>>,
) {
    loop {
        tokio::select! {
            e = events.next() => match e {
                None => break,
                Some(e) => {
                    if let Some(r) = e.response() {
                        last = r.clone();
                        if !e.is_terminal() {
                            // Logged by `save`; the terminal save will retry the row.
                            let _ = storage::save(&state, &save, &last).await;
                        }
                    }
                    if e.is_terminal() {
                        break;
                    }
                }
            },
            reply = &mut cancel => {
                drop(events);
                last.status = Status::Cancelled;
                // Logged by `save`; the canceller still gets the cancelled response.
                let _ = storage::save(&state, &save, &last).await;
                if let Ok(reply) = reply {
                    let _ = reply.send(last);
                }
                state.background().with(|m| m.remove(&id));
                return;
            }
        }
    }
    state.background().with(|m| m.remove(&id));
}

/// Cancels a background response that is still running, and returns it (`cancelled`).
#[utoipa::path(
    post, path = "/v1/responses/{id}/cancel", operation_id = "cancel_response", tag = "openai",
    params(("id" = String, Path, description = "The response's id.")),
    responses(
        (status = 200, description = "The cancelled response.", body = ResponseObject),
        (status = 400, response = ErrorEnvelope),
        (status = 404, response = ErrorEnvelope),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = super::stored::owner(key);
    let task = state.background().with(|m| match m.get(&id) {
        Some(t) if t.owner == owner => m.remove(&id),
        _ => None,
    });
    let Some(task) = task else {
        return match storage::exists(&state, &owner, &id).await? {
            true => Err(ApiError::invalid(
                "Cannot cancel a response that is not running: only background responses \
                 still in progress can be cancelled",
                None,
            )),
            false => Err(ApiError::NotFound {
                message: format!("Response with id '{id}' not found."),
                param: None,
                code: None,
            }),
        };
    };
    let (tx, rx) = oneshot::channel();
    if task.cancel.send(tx).is_err() {
        return Err(ApiError::invalid("the response has just finished", None));
    }
    match rx.await {
        Ok(r) => Ok(Json(r).into_response()),
        Err(_) => Err(ApiError::invalid("the response has just finished", None)),
    }
}
