//! Extractors whose rejections are our JSON errors, so a client sending a
//! bad body, path or query string learns what was wrong in the same shape
//! as every other error (`{code, message}`), not axum's plain text.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ApiError;

/// A JSON object body (every body of the API is one: serde would also
/// read a struct from an array of its fields, which the document does not
/// allow).
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let value = match Json::<Value>::from_request(req, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => {
                return Err(ApiError::BadRequest(format!(
                    "the request body is not what this endpoint expects: {}",
                    rejection.body_text()
                )));
            }
        };
        if !value.is_object() {
            return Err(ApiError::BadRequest(
                "the request body is not what this endpoint expects: a JSON object".into(),
            ));
        }
        serde_json::from_value(value).map(JsonBody).map_err(|e| {
            ApiError::BadRequest(format!(
                "the request body is not what this endpoint expects: {e}"
            ))
        })
    }
}

/// The path's parameters (`/api/patients/{id}`).
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiPath<T>, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the address is not what this endpoint expects: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The query string (`?name=smi&limit=20`).
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the query string is not what this endpoint expects: {}",
                rejection.body_text()
            ))),
        }
    }
}
