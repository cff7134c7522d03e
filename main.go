// Command defender-enricher enriches Microsoft Defender for Endpoint alerts
// on Kafka with the user related to each alert.
package main

import (
	_ "github.com/Azure/azure-sdk-for-go/sdk/azcore"
	_ "github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	_ "github.com/hashicorp/golang-lru/v2/expirable"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "github.com/segmentio/kafka-go"
	_ "github.com/sony/gobreaker/v2"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "github.com/twmb/franz-go/pkg/kgo"
	_ "golang.org/x/sync/singleflight"
)

func main() {}
