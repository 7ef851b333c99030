//! Integrations with the systems NovaPay's business clients use. Each one turns a peer's protocol into
//! calls on `rag::Assistant`; none of them knows axum (the HTTP layer hands them raw request bodies).

pub mod bitrix24;
