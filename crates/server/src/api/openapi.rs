//! The JSON API's OpenAPI 3.1 document (utoipa, from the handlers'
//! `#[utoipa::path]` and the DTOs' `ToSchema`), served at
//! `/api/openapi.json`; `docs.rs` renders the same document as a page.
//! Every error answer is one of the responses here, each with the JSON
//! error shape (`Error`) and the codes it can carry.

use std::sync::LazyLock;

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, ToResponse};

use super::dto::ErrorBody;
use super::schemas::{LanguageDoc, MessageStatusDoc, TemplateKindDoc};

/// `code` bad_request: the body, address or query string is not what the
/// operation expects, or a value is refused (in words).
#[derive(ToResponse)]
#[response(description = "Bad request (code bad_request)")]
#[allow(dead_code)]
pub(crate) struct BadRequest(ErrorBody);

/// `code` unauthorized: no bearer token, or not a valid one.
#[derive(ToResponse)]
#[response(description = "No valid bearer token (code unauthorized)")]
#[allow(dead_code)]
pub(crate) struct Unauthorized(ErrorBody);

/// `code` forbidden: only an administrator may do this.
#[derive(ToResponse)]
#[response(description = "Administrators only (code forbidden)")]
#[allow(dead_code)]
pub(crate) struct Forbidden(ErrorBody);

/// `code` not_found: no such resource among the caller's practices.
#[derive(ToResponse)]
#[response(description = "Not found, or not one of the caller's practices' (code not_found)")]
#[allow(dead_code)]
pub(crate) struct NotFound(ErrorBody);

/// A conflict with the current state.
#[derive(ToResponse)]
#[response(
    description = "Conflict: codes duplicate_mrn, duplicate_practice, conflict, \
                   webhook_disabled, merged_into (with surviving_patient_id), already_active, \
                   deceased, patient_responded (with response), opted_out"
)]
#[allow(dead_code)]
pub(crate) struct Conflict(ErrorBody);

/// Fields that are missing or invalid, each named in `problems`.
#[derive(ToResponse)]
#[response(
    description = "Invalid or missing fields (codes invalid_fields, missing_fields), \
                   each in problems"
)]
#[allow(dead_code)]
pub(crate) struct InvalidFields(ErrorBody);

/// R7: the cap of sends in 30 days is reached.
#[derive(ToResponse)]
#[response(
    description = "The cap is reached (code cap_reached, with next_possible_at; \
                   Retry-After in seconds)",
    headers(("Retry-After" = u64, description = "Seconds until a send is possible"))
)]
#[allow(dead_code)]
pub(crate) struct CapReached(ErrorBody);

/// A body over the API's limit (`[http] api_body_limit_bytes`).
#[derive(ToResponse)]
#[response(description = "The request body is over the API's limit")]
#[allow(dead_code)]
pub(crate) struct PayloadTooLarge(String);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Enroll API",
        description = "The JSON API of Enroll: practices, patients, Enroll Now, HL7 messages, \
                       failed deliveries and webhooks. Every operation needs a staff user's \
                       bearer token (`enroll user add` makes one); every view or change of a \
                       patient is audited. Errors answer `{code, message}` and, for some \
                       codes, more fields.",
        license(name = "AGPL-3.0-or-later", identifier = "AGPL-3.0-or-later"),
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    paths(
        super::practices::list,
        super::practices::create,
        super::practices::show,
        super::practices::set_auto_invites,
        super::practices::set_schedule,
        super::practices::set_phone,
        super::practices::set_channels,
        super::templates::preview,
        super::templates::put,
        super::webhooks::list,
        super::webhooks::add,
        super::webhooks::remove,
        super::webhooks::set_enabled,
        super::webhooks::ping,
        super::webhooks::deliveries,
        super::patients::search,
        super::patients::create,
        super::patients::show,
        super::patients::update,
        super::patients::timeline,
        super::patients::invites,
        super::patients::new_encounter,
        super::patients::new_appointment,
        super::patients::enroll_now,
        super::patients::audit_log,
        super::deliveries::failed,
        super::deliveries::resend,
        super::messages::list,
        super::messages::show,
        super::messages::reprocess,
        super::messages::facilities,
        super::messages::map_facility,
    ),
    // The schemas that only parameters name (utoipa collects the others).
    components(schemas(ErrorBody, LanguageDoc, TemplateKindDoc, MessageStatusDoc), responses(
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        InvalidFields,
        CapReached,
        PayloadTooLarge
    )),
    tags(
        (name = "practices", description = "Practices and their Integration Tool settings"),
        (name = "templates", description = "Invite templates per practice and language (R12)"),
        (name = "webhooks", description = "A practice's webhook endpoints"),
        (name = "patients", description = "Patients, their charts, triggers and Enroll Now"),
        (name = "audit", description = "The audit log"),
        (name = "deliveries", description = "Failed deliveries and sending again"),
        (name = "hl7", description = "Inbound HL7 messages and facility mappings"),
    )
)]
struct ApiDoc;

/// The security scheme every operation names: a staff user's token.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A staff user's API token: `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, built once. Every operation with a body can also answer
/// 413 (the body limit is a layer in front of all of them). A parameter in
/// the address, query string or a header is absent or a value, never null:
/// the `null` that utoipa adds to an `Option`'s type is taken out. Each
/// operation's id is its tag and its handler (`webhooks_add`).
pub(crate) static DOCUMENT: LazyLock<Document> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            // utoipa names an operation after its handler, and three are
            // `list`: the tag makes each name unique.
            if let (Some(tag), Some(id)) = (
                op.tags.as_ref().and_then(|t| t.first()),
                op.operation_id.as_ref(),
            ) {
                op.operation_id = Some(format!("{tag}_{id}"));
            }
            for parameter in op.parameters.iter_mut().flatten() {
                if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut()
                    && let SchemaType::Array(types) = &object.schema_type
                {
                    let types: Vec<Type> = types
                        .iter()
                        .filter(|t| **t != Type::Null)
                        .cloned()
                        .collect();
                    object.schema_type = match types.as_slice() {
                        [one] => SchemaType::Type(one.clone()),
                        _ => SchemaType::Array(types),
                    };
                }
            }
            if op.request_body.is_some() {
                op.responses.responses.insert(
                    "413".to_string(),
                    utoipa::openapi::Ref::from_response_name("PayloadTooLarge").into(),
                );
            }
        }
    }
    doc
});

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Json(&*DOCUMENT)).into_response()
}
