//! The gRPC extras grpcurl and ghz rely on: health and reflection.

use fluxgate::proto::iox_authz::resource_action_permission::Action;
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::common::{Backend, TokenServer};
use crate::{authorize, authz_client, channel, perm};

const AUTHZ_SERVICE: &str = "influxdata.iox.authz.v1.IoxAuthorizerService";
const TOKEN_SERVICE: &str = "fluxgate.tokens.v1.TokenService";

async fn health_reports_serving(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", AUTHZ_SERVICE, TOKEN_SERVICE] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
}

async fn reflect(server: &TokenServer, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel(server).await);
    let outbound = tokio_stream::once(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut inbound = client
        .server_reflection_info(outbound)
        .await
        .expect("reflection v1 served")
        .into_inner();
    inbound
        .next()
        .await
        .expect("one response")
        .expect("reflection OK")
        .message_response
        .expect("a response")
}

async fn reflection_lists_both_services(backend: Backend) {
    let server = TokenServer::start_on(backend).await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(&server, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&AUTHZ_SERVICE), "{names:?}");
    assert!(names.contains(&TOKEN_SERVICE), "{names:?}");

    // grpcurl describes the services from their file descriptors.
    for symbol in [AUTHZ_SERVICE, TOKEN_SERVICE] {
        let MessageResponse::FileDescriptorResponse(files) =
            reflect(&server, MessageRequest::FileContainingSymbol(symbol.into())).await
        else {
            panic!("expected descriptors for {symbol}")
        };
        assert!(!files.file_descriptor_proto.is_empty(), "{symbol}");
    }

    // The server still answers Authorize on the same port.
    let mut authz = authz_client(&server).await;
    let r = authorize(&mut authz, b"", vec![perm("db", Action::Read)]).await;
    assert!(!r.valid);
}

crate::on_both_backends!(health_reports_serving, reflection_lists_both_services,);
