// Command go-producer sends Spyglass contract-v1 events from Go with franz-go, the way a Go service would.
//
// It reads the same SPYGLASS_* environment variables as Spyglass itself (bootstrap servers, topic names and
// the Kafka security settings), sends -n events of each kind to its kind's topic keyed by its entity, waits
// for every acknowledgement and prints one JSON line: how many events of each kind the broker stored.
//
//	cd docs/examples/go-producer && go run . -n 10
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The fields every event carries (schemas/EVENTS.md).
type Envelope struct {
	EventID string `json:"event_id"`
	Kind    string `json:"kind"`
	TS      string `json:"ts"` // RFC 3339 with an offset
	Tenant  string `json:"tenant,omitempty"`
	Source  string `json:"source,omitempty"`
}

type APIUsage struct {
	Envelope
	APIKeyID   string `json:"api_key_id"`
	Principal  string `json:"principal"`
	ClientIP   string `json:"client_ip"`
	Method     string `json:"method"`
	Endpoint   string `json:"endpoint"`
	Status     int    `json:"status"`
	AuthResult string `json:"auth_result"` // ok | invalid_credentials | expired | forbidden | rate_limited
	UserAgent  string `json:"user_agent,omitempty"`
	Model      string `json:"model,omitempty"`
	TokensIn   int64  `json:"tokens_in,omitempty"`
	TokensOut  int64  `json:"tokens_out,omitempty"`
}

type DataAccess struct {
	Envelope
	Principal              string `json:"principal"`
	PrincipalDepartment    string `json:"principal_department"`
	Dataset                string `json:"dataset"`
	DatasetOwnerDepartment string `json:"dataset_owner_department"`
	Sensitivity            string `json:"sensitivity"` // public | internal | confidential | restricted
	Operation              string `json:"operation"`   // read | write | delete | export | train
	Granted                bool   `json:"granted"`
	Rows                   int64  `json:"rows,omitempty"`
}

type AgentExecution struct {
	Envelope
	AgentID      string `json:"agent_id"`
	AgentType    string `json:"agent_type"`
	SessionID    string `json:"session_id"`
	Principal    string `json:"principal"`
	Action       string `json:"action"`
	TargetSystem string `json:"target_system"`
	Privilege    string `json:"privilege"`    // read | write | admin
	Approval     string `json:"approval"`     // not_required | approved | pending | denied | bypassed
	TriggeredBy  string `json:"triggered_by"` // user | schedule | agent | external_content
	Outcome      string `json:"outcome"`      // success | error | blocked
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// clientOptions turns the SPYGLASS_KAFKA_* settings into franz-go options (docs/kafka-security.md).
func clientOptions() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(env("SPYGLASS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), ",")...),
		kgo.ClientID("go-producer-example"),
		kgo.ProducerLinger(20 * time.Millisecond),
		// franz-go compresses with snappy by default; Spyglass's consumers read gzip or uncompressed batches
		kgo.ProducerBatchCompression(kgo.GzipCompression(), kgo.NoCompression()),
	}
	protocol := env("SPYGLASS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
	if protocol == "SSL" || protocol == "SASL_SSL" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if ca := os.Getenv("SPYGLASS_KAFKA_SSL_CA_FILE"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificate in %s", ca)
			}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if strings.HasPrefix(protocol, "SASL_") {
		user := os.Getenv("SPYGLASS_KAFKA_SASL_USERNAME")
		password := os.Getenv("SPYGLASS_KAFKA_SASL_PASSWORD")
		if file := os.Getenv("SPYGLASS_KAFKA_SASL_PASSWORD_FILE"); file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, err
			}
			password = strings.SplitN(string(b), "\n", 2)[0]
		}
		switch env("SPYGLASS_KAFKA_SASL_MECHANISM", "PLAIN") {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha512Mechanism()))
		default:
			return nil, errors.New("unknown SPYGLASS_KAFKA_SASL_MECHANISM")
		}
	}
	return opts, nil
}

func record(topic, key string, event any) (*kgo.Record, error) {
	value, err := json.Marshal(event)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: value}, nil
}

func run(n int, tenant, runID string) (map[string]int, error) {
	opts, err := clientOptions()
	if err != nil {
		return nil, err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	topics := map[string]string{
		"api_usage":       env("SPYGLASS_TOPIC_API_USAGE", "spyglass.api-usage"),
		"data_access":     env("SPYGLASS_TOPIC_DATA_ACCESS", "spyglass.data-access"),
		"agent_execution": env("SPYGLASS_TOPIC_AGENT_EXECUTION", "spyglass.agent-execution"),
	}
	var records []*kgo.Record
	start := time.Now().UTC()
	for i := 0; i < n; i++ {
		ts := start.Add(time.Duration(i) * time.Second).Format(time.RFC3339Nano)
		head := func(kind string) Envelope {
			return Envelope{EventID: fmt.Sprintf("go-%s-%s-%d", runID, kind, i), Kind: kind, TS: ts,
				Tenant: tenant, Source: "go-producer-example"}
		}
		key := fmt.Sprintf("key-go-%d", i%3)
		principal := fmt.Sprintf("svc-go-%d", i%3)
		agent := fmt.Sprintf("agt-go-%d", i%2)
		for _, r := range []struct {
			kind, key string
			event     any
		}{
			{"api_usage", key, APIUsage{Envelope: head("api_usage"), APIKeyID: key, Principal: principal,
				ClientIP: "10.20.0.7", Method: "POST", Endpoint: "/v1/chat/completions", Status: 200,
				AuthResult: "ok", UserAgent: "Go-http-client/2.0", Model: "llm-small-2026",
				TokensIn: int64(300 + i), TokensOut: 120}},
			{"data_access", principal, DataAccess{Envelope: head("data_access"), Principal: principal,
				PrincipalDepartment: "support", Dataset: "support/tickets", DatasetOwnerDepartment: "support",
				Sensitivity: "internal", Operation: "read", Granted: true, Rows: 25}},
			{"agent_execution", agent, AgentExecution{Envelope: head("agent_execution"), AgentID: agent,
				AgentType: "support-assistant", SessionID: fmt.Sprintf("s-go-%s-%d", runID, i/5),
				Principal: principal, Action: "search_kb", TargetSystem: "kb", Privilege: "read",
				Approval: "not_required", TriggeredBy: "user", Outcome: "success"}},
		} {
			rec, err := record(topics[r.kind], r.key, r.event)
			if err != nil {
				return nil, err
			}
			records = append(records, rec)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	results := client.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		return nil, err
	}
	stored := map[string]int{}
	kindOf := map[string]string{}
	for k, t := range topics {
		kindOf[t] = k
	}
	for _, r := range results {
		stored[kindOf[r.Record.Topic]]++
	}
	return stored, nil
}

func main() {
	n := flag.Int("n", 10, "events of each kind")
	tenant := flag.String("tenant", "", "tenant of the events (default: the worker's default tenant)")
	runID := flag.String("run", fmt.Sprintf("%d", time.Now().UnixNano()), "part of every event id, so reruns do not collide")
	flag.Parse()
	stored, err := run(*n, *tenant, *runID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-producer:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]any{"stored": stored})
	fmt.Println(string(out))
}
