//! Unit tests of the API surface as a whole.

#[test]
fn every_route_is_in_the_openapi_document_and_back() {
    let (operations, document) = crate::openapi_document();
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if [
                "get", "post", "put", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut registered = operations.clone();
    registered.sort();
    documented.sort();
    assert_eq!(registered, documented);
    assert!(registered.len() >= 20, "{registered:?}");
    // OpenAPI 3.1 requires a description on every response.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(
                    !description.is_empty(),
                    "{method} {path} {status} has no description"
                );
            }
        }
    }
}
