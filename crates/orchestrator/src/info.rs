//! `orchestrator info`: call SystemService/GetInfo and print the answer.

use anyhow::Context;
use drover_api::pb::orchestrator::v1::GetInfoRequest;
use drover_api::pb::orchestrator::v1::system_service_client::SystemServiceClient;
use drover_api::{StoreLocation, SystemInfo};

use crate::cli::InfoArgs;

pub(crate) async fn run(args: InfoArgs) -> anyhow::Result<()> {
    let server = &args.client.server;
    let channel = crate::tls::connect(&args.client).await?;
    let mut client = SystemServiceClient::new(channel);
    let response = client
        .get_info(GetInfoRequest {})
        .await
        .with_context(|| format!("calling GetInfo on {server}"))?
        .into_inner();
    let info = SystemInfo::try_from(response)
        .with_context(|| format!("{server} sent an invalid GetInfo response"))?;
    print!("{}", render(&info));
    Ok(())
}

fn render(info: &SystemInfo) -> String {
    let location = match &info.store.location {
        StoreLocation::InMemory => "in memory".to_string(),
        StoreLocation::DataDir(dir) => format!("data dir {}", dir.display()),
        StoreLocation::Etcd { endpoints } => format!("etcd {}", endpoints.join(",")),
    };
    format!(
        "version:  {}\nstore:    {} ({location})\nrevision: {}\nuptime:   {}s\ncaller:   {}\n",
        info.version,
        info.store.backend,
        info.store.revision,
        info.uptime.as_secs(),
        info.caller.as_deref().unwrap_or("anonymous")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::StoreInfo;

    #[test]
    fn renders_one_fact_per_line() {
        let info = SystemInfo {
            version: "0.1.0".into(),
            store: StoreInfo {
                backend: "etcd".into(),
                revision: 12,
                location: StoreLocation::Etcd {
                    endpoints: vec!["http://a:1".into(), "http://b:2".into()],
                },
            },
            uptime: std::time::Duration::from_millis(61_500),
            caller: Some("CN=ops,O=drover".into()),
        };
        assert_eq!(
            render(&info),
            "version:  0.1.0\nstore:    etcd (etcd http://a:1,http://b:2)\nrevision: 12\nuptime:   61s\ncaller:   CN=ops,O=drover\n"
        );
    }
}
