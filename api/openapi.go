package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"
	yaml "go.yaml.in/yaml/v3"
)

// openapiYAML is the API's contract, written as YAML for people; GET
// /openapi.json serves it as JSON.
//
//go:embed openapi.yaml
var openapiYAML []byte

// anchorsKey is the document's top-level key that only holds YAML anchors
// (response sets operations merge); it is not served.
const anchorsKey = "x-yaml-anchors"

var openapiDoc = sync.OnceValues(func() ([]byte, error) { return yamlToJSON(openapiYAML, anchorsKey) })

// OpenAPI is the API's OpenAPI 3.1 document as JSON, as GET /openapi.json
// serves it.
func OpenAPI() ([]byte, error) { return openapiDoc() }

// openapiRoute registers GET /openapi.json behind limit. The document is
// public, as /healthz is: it holds no secret and no tenant's data.
func openapiRoute(r gin.IRoutes, limit gin.HandlerFunc) {
	r.GET("/openapi.json", limit, func(c *gin.Context) {
		doc, err := OpenAPI()
		if err != nil {
			jsonError(c, err)
			return
		}
		c.Data(http.StatusOK, "application/json", doc)
	})
}

// yamlToJSON converts a YAML document to JSON, keeping the order of keys,
// resolving anchors and merge keys ("<<"), and leaving out the top-level
// keys drop names.
func yamlToJSON(src []byte, drop ...string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("openapi: want one YAML document")
	}
	root := doc.Content[0]
	if root.Kind == yaml.MappingNode {
		kept := root.Content[:0:0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			dropped := false
			for _, d := range drop {
				dropped = dropped || root.Content[i].Value == d
			}
			if !dropped {
				kept = append(kept, root.Content[i], root.Content[i+1])
			}
		}
		root.Content = kept
	}
	var b bytes.Buffer
	if err := writeJSON(&b, root); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// writeJSON writes n as JSON.
func writeJSON(b *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.AliasNode:
		return writeJSON(b, n.Alias)
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case yaml.MappingNode:
		keys, values, err := mappingEntries(n)
		if err != nil {
			return err
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			b.Write(kb)
			b.WriteByte(':')
			if err := writeJSON(b, values[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case yaml.ScalarNode:
		return writeScalar(b, n)
	}
	return fmt.Errorf("openapi: line %d: unexpected YAML node", n.Line)
}

// mappingEntries is a mapping's keys in order, merged mappings' ("<<")
// first, with a key given again overriding the earlier value.
func mappingEntries(n *yaml.Node) ([]string, map[string]*yaml.Node, error) {
	var keys []string
	values := map[string]*yaml.Node{}
	set := func(k string, v *yaml.Node) {
		if _, ok := values[k]; !ok {
			keys = append(keys, k)
		}
		values[k] = v
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag != "!!merge" {
			continue
		}
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if v.Kind != yaml.MappingNode {
			return nil, nil, fmt.Errorf("openapi: line %d: merge a mapping", k.Line)
		}
		mk, mv, err := mappingEntries(v)
		if err != nil {
			return nil, nil, err
		}
		for _, key := range mk {
			set(key, mv[key])
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Tag != "!!merge" {
			set(k.Value, n.Content[i+1])
		}
	}
	return keys, values, nil
}

func writeScalar(b *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		b.WriteString("null")
	case "!!bool":
		v, err := strconv.ParseBool(n.Value)
		if err != nil {
			return fmt.Errorf("openapi: line %d: %w", n.Line, err)
		}
		b.WriteString(strconv.FormatBool(v))
	case "!!int", "!!float":
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("openapi: line %d: %w", n.Line, err)
		}
		nb, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("openapi: line %d: %w", n.Line, err)
		}
		b.Write(nb)
	default:
		sb, _ := json.Marshal(n.Value)
		b.Write(sb)
	}
	return nil
}
