//! `GET /api/docs`: the OpenAPI document as a page of our own, rendered on
//! the server from the same document as `/api/openapi.json` (each
//! operation with its parameters, request body and responses, then the
//! schemas). No script and nothing from elsewhere: the staff pages'
//! stylesheet only, so the page keeps the strict CSP of every page.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::openapi::DOCUMENT;
use crate::pages::render;

#[derive(Serialize)]
struct Operation {
    anchor: String,
    method: String,
    path: String,
    tag: String,
    summary: String,
    description: String,
    admin_only: bool,
    parameters: Vec<Parameter>,
    body: Option<TypeRef>,
    responses: Vec<Answer>,
}

#[derive(Serialize)]
struct Parameter {
    name: String,
    location: String,
    required: bool,
    schema: TypeRef,
    description: String,
}

#[derive(Serialize)]
struct Answer {
    status: String,
    description: String,
    schema: Option<TypeRef>,
}

/// A type in words, and the schema it names (for a link), if one.
#[derive(Serialize)]
struct TypeRef {
    words: String,
    link: Option<String>,
}

#[derive(Serialize)]
struct Schema {
    name: String,
    description: String,
    fields: Vec<Field>,
    /// For an enum: its values; for a tagged union: its variants in words.
    variants: Vec<String>,
}

#[derive(Serialize)]
struct Field {
    name: String,
    schema: TypeRef,
    required: bool,
    description: String,
}

#[derive(Serialize)]
struct Tag {
    name: String,
    description: String,
    operations: Vec<Operation>,
}

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

pub(crate) async fn page() -> Response {
    let doc = match serde_json::to_value(&*DOCUMENT) {
        Ok(doc) => doc,
        Err(e) => return crate::ui::internal(e),
    };
    let info = &doc["info"];
    let tags = tags(&doc);
    let schemas = schemas(&doc);
    render(
        StatusCode::OK,
        "api_docs.html",
        minijinja::context! {
            title => text(&info["title"]),
            version => text(&info["version"]),
            openapi => text(&doc["openapi"]),
            description => text(&info["description"]),
            tags,
            schemas,
        },
    )
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn tags(doc: &Value) -> Vec<Tag> {
    let mut tags: Vec<Tag> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Tag {
            name: text(&t["name"]),
            description: text(&t["description"]),
            operations: Vec::new(),
        })
        .collect();
    let Some(paths) = doc["paths"].as_object() else {
        return tags;
    };
    for (path, item) in paths {
        for method in METHODS {
            let op = &item[method];
            if !op.is_object() {
                continue;
            }
            let operation = operation(doc, path, method, op);
            match tags.iter_mut().find(|t| t.name == operation.tag) {
                Some(tag) => tag.operations.push(operation),
                None => tags.push(Tag {
                    name: operation.tag.clone(),
                    description: String::new(),
                    operations: vec![operation],
                }),
            }
        }
    }
    tags.retain(|t| !t.operations.is_empty());
    tags
}

fn operation(doc: &Value, path: &str, method: &str, op: &Value) -> Operation {
    let parameters = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Parameter {
            name: text(&p["name"]),
            location: text(&p["in"]),
            required: p["required"].as_bool().unwrap_or(false),
            schema: type_ref(&p["schema"]),
            description: text(&p["description"]),
        })
        .collect();
    let body = op["requestBody"]["content"]["application/json"]
        .get("schema")
        .map(type_ref);
    let responses = op["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(status, r)| {
            let r = resolve(doc, r);
            let schema = r["content"]
                .as_object()
                .and_then(|c| c.values().next())
                .and_then(|c| c.get("schema"))
                .map(type_ref);
            Answer {
                status: status.clone(),
                description: text(&r["description"]),
                schema,
            }
        })
        .collect::<Vec<_>>();
    let admin_only = responses.iter().any(|r| r.status == "403");
    let anchor = format!(
        "{method}-{}",
        path.trim_start_matches('/')
            .replace(['/', '{', '}'], "-")
            .replace("--", "-")
            .trim_end_matches('-')
    );
    let (summary, description) = match text(&op["description"]) {
        d if d.is_empty() => (text(&op["summary"]), String::new()),
        d => (text(&op["summary"]), d),
    };
    Operation {
        anchor,
        method: method.to_uppercase(),
        path: path.to_string(),
        tag: op["tags"][0].as_str().unwrap_or("other").to_string(),
        summary,
        description,
        admin_only,
        parameters,
        body,
        responses,
    }
}

/// A `$ref` to a response, followed to `components.responses`.
fn resolve<'a>(doc: &'a Value, r: &'a Value) -> &'a Value {
    match r["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default();
            &doc["components"]["responses"][name]
        }
        None => r,
    }
}

fn schema_name(reference: &str) -> String {
    reference.rsplit('/').next().unwrap_or_default().to_string()
}

/// A schema in a few words: `Patient`, `array of Invite`, `string or
/// null`, `integer (int64)`, one of its values.
fn type_ref(schema: &Value) -> TypeRef {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = schema_name(reference);
        return TypeRef {
            link: Some(name.clone()),
            words: name,
        };
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema[key].as_array() {
            let parts: Vec<TypeRef> = options.iter().map(type_ref).collect();
            let link = parts.iter().find_map(|p| p.link.clone());
            let joiner = if key == "allOf" { " and " } else { " or " };
            let words = parts
                .into_iter()
                .map(|p| p.words)
                .collect::<Vec<_>>()
                .join(joiner);
            return TypeRef { words, link };
        }
    }
    let mut types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().map(text).collect(),
        _ => Vec::new(),
    };
    let mut link = None;
    if let Some(position) = types.iter().position(|t| t == "array") {
        let items = type_ref(&schema["items"]);
        link = items.link;
        types[position] = format!("array of {}", items.words);
    }
    if let Some(format) = schema["format"].as_str()
        && let Some(first) = types.first_mut()
    {
        *first = format!("{first} ({format})");
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        return TypeRef {
            words: format!("one of {}", values.join(", ")),
            link,
        };
    }
    if types.is_empty() {
        types.push("any".into());
    }
    TypeRef {
        words: types.join(" or "),
        link,
    }
}

fn schemas(doc: &Value) -> Vec<Schema> {
    doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            let variants = schema["oneOf"]
                .as_array()
                .map(|vs| vs.iter().map(variant_words).collect())
                .or_else(|| {
                    schema["enum"]
                        .as_array()
                        .map(|vs| vs.iter().map(|v| v.to_string()).collect())
                })
                .unwrap_or_default();
            Schema {
                name: name.clone(),
                description: text(&schema["description"]),
                fields: fields(schema),
                variants,
            }
        })
        .collect()
}

/// The properties of an object schema, those of `allOf` parts included.
fn fields(schema: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            out.push(Field {
                name: name.clone(),
                schema: type_ref(property),
                required: required.contains(&name.as_str()),
                description: text(&property["description"]),
            });
        }
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        if let Some(reference) = part["$ref"].as_str() {
            let name = schema_name(reference);
            out.push(Field {
                name: format!("(every field of {name})"),
                schema: TypeRef {
                    words: name.clone(),
                    link: Some(name),
                },
                required: true,
                description: String::new(),
            });
        } else {
            out.extend(fields(part));
        }
    }
    out
}

/// One variant of a tagged union: its tag's value and its other fields.
fn variant_words(variant: &Value) -> String {
    let Some(properties) = variant["properties"].as_object() else {
        return type_ref(variant).words;
    };
    let mut tag = String::new();
    let mut rest = Vec::new();
    for (name, property) in properties {
        match property["enum"].as_array() {
            Some(values) if values.len() == 1 => {
                tag = format!("{name} = {}", values[0]);
            }
            _ => rest.push(format!("{name}: {}", type_ref(property).words)),
        }
    }
    if rest.is_empty() {
        tag
    } else {
        format!("{tag}, with {}", rest.join("; "))
    }
}
