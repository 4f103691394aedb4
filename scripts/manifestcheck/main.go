// Command manifestcheck validates Kubernetes manifests read from files or
// standard input (multi-document YAML, e.g. `helm template` output): every
// document parses, names its apiVersion, kind and metadata.name, and every
// pod template runs the syncer as a non-root user with a read-only root
// file system, no privilege escalation, resources, the config volume and
// its Secret. It exits 1 naming the document and the field at fault.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

func main() {
	if err := run(os.Args[1:], os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "manifestcheck:", err)
		os.Exit(1)
	}
}

func run(files []string, stdin io.Reader) error {
	var inputs []struct {
		name string
		data []byte
	}
	if len(files) == 0 {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return err
		}
		inputs = append(inputs, struct {
			name string
			data []byte
		}{"stdin", b})
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		inputs = append(inputs, struct {
			name string
			data []byte
		}{f, b})
	}
	var errs []error
	docs := 0
	for _, in := range inputs {
		dec := yaml.NewDecoder(bytes.NewReader(in.data))
		for i := 1; ; i++ {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", in.name, i, err))
				break
			}
			if doc == nil {
				continue
			}
			docs++
			where := fmt.Sprintf("%s: %v %v", in.name, doc["kind"], dig(doc, "metadata", "name"))
			for _, e := range check(doc) {
				errs = append(errs, fmt.Errorf("%s: %s", where, e))
			}
		}
	}
	if docs == 0 {
		errs = append(errs, errors.New("no manifest found"))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	fmt.Printf("manifestcheck: %d manifests valid\n", docs)
	return nil
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func check(doc map[string]any) []string {
	var bad []string
	for _, f := range []string{"apiVersion", "kind"} {
		if s, _ := doc[f].(string); s == "" {
			bad = append(bad, f+" missing")
		}
	}
	if s, _ := dig(doc, "metadata", "name").(string); s == "" {
		bad = append(bad, "metadata.name missing")
	}
	var pod any
	switch doc["kind"] {
	case "CronJob":
		pod = dig(doc, "spec", "jobTemplate", "spec", "template", "spec")
		if dig(doc, "spec", "concurrencyPolicy") != "Forbid" {
			bad = append(bad, "spec.concurrencyPolicy must be Forbid")
		}
	case "Deployment":
		pod = dig(doc, "spec", "template", "spec")
	default:
		return bad
	}
	if dig(pod, "securityContext", "runAsNonRoot") != true {
		bad = append(bad, "pod securityContext.runAsNonRoot must be true")
	}
	containers, _ := dig(pod, "containers").([]any)
	if len(containers) == 0 {
		return append(bad, "no containers")
	}
	inits, _ := dig(pod, "initContainers").([]any)
	containers = append(containers, inits...)
	for _, c := range containers {
		name := dig(c, "name")
		if s, _ := dig(c, "image").(string); s == "" || strings.HasSuffix(s, ":") {
			bad = append(bad, fmt.Sprintf("container %v: image missing or without tag", name))
		}
		args, _ := dig(c, "args").([]any)
		if len(args) == 0 {
			bad = append(bad, fmt.Sprintf("container %v: no args (run or serve)", name))
		}
		if dig(c, "securityContext", "readOnlyRootFilesystem") != true || dig(c, "securityContext", "allowPrivilegeEscalation") != false {
			bad = append(bad, fmt.Sprintf("container %v: securityContext must set readOnlyRootFilesystem true and allowPrivilegeEscalation false", name))
		}
		if dig(c, "resources", "limits", "memory") == nil {
			bad = append(bad, fmt.Sprintf("container %v: resources.limits.memory missing", name))
		}
		env, _ := dig(c, "envFrom").([]any)
		if len(env) == 0 || dig(env[0], "secretRef", "name") == nil {
			bad = append(bad, fmt.Sprintf("container %v: envFrom secretRef missing", name))
		}
		mounts, _ := dig(c, "volumeMounts").([]any)
		if len(mounts) == 0 || dig(mounts[0], "mountPath") != "/etc/syncer" {
			bad = append(bad, fmt.Sprintf("container %v: config volume not mounted at /etc/syncer", name))
		}
	}
	return bad
}
