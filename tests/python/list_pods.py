"""A pod's view through lite-apiserver, with the official Python client.

Usage: list_pods.py URL CA_FILE TOKEN NAMESPACE
Prints the pod names as a JSON list; exits 1 with the API error otherwise.
This is what an in-cluster client (service-account token) does.
"""
import json
import sys

from kubernetes import client


def main() -> int:
    url, ca, token, namespace = sys.argv[1:5]
    config = client.Configuration()
    config.host = url
    config.ssl_ca_cert = ca
    config.api_key = {"authorization": "Bearer " + token}
    config.retries = 0
    api = client.CoreV1Api(client.ApiClient(config))
    try:
        pods = api.list_namespaced_pod(namespace, _request_timeout=10)
    except client.exceptions.ApiException as e:
        print(json.dumps({"status": e.status, "reason": e.reason}))
        return 1
    print(json.dumps(sorted(p.metadata.name for p in pods.items)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
