package testbed

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// xnode is a minimal XML tree for rewriting moto's EC2 query answers.
// EC2 responses are element-only documents (no mixed content), so a node
// has either children or text. The tree is built from raw tokens, so the
// namespace declaration and element names come back exactly as moto wrote
// them; encoding/xml's struct mapping would need a struct per response
// and drop every field the struct does not name.
type xnode struct {
	name string
	attr []xml.Attr
	kids []*xnode
	text string
}

// parseXML reads a whole document into a tree.
func parseXML(b []byte) (*xnode, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	var stack []*xnode
	var root *xnode
	for {
		tok, err := d.RawToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &xnode{name: qname(t.Name), attr: append([]xml.Attr(nil), t.Attr...)}
			if len(stack) > 0 {
				parent := stack[len(stack)-1]
				parent.kids = append(parent.kids, n)
			} else if root == nil {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, errors.New("parse XML: unbalanced end element")
			}
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(t)
			}
		}
	}
	if root == nil {
		return nil, errors.New("parse XML: no root element")
	}
	return root, nil
}

func qname(n xml.Name) string {
	if n.Space != "" {
		return n.Space + ":" + n.Local
	}
	return n.Local
}

// bytes serializes the tree with an XML declaration, as moto does.
func (n *xnode) bytes() []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	n.write(&b)
	return b.Bytes()
}

func (n *xnode) write(b *bytes.Buffer) {
	b.WriteByte('<')
	b.WriteString(n.name)
	for _, a := range n.attr {
		fmt.Fprintf(b, ` %s="`, qname(a.Name))
		_ = xml.EscapeText(b, []byte(a.Value))
		b.WriteByte('"')
	}
	if len(n.kids) == 0 && strings.TrimSpace(n.text) == "" {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	if len(n.kids) > 0 {
		for _, k := range n.kids {
			k.write(b)
		}
	} else {
		_ = xml.EscapeText(b, []byte(n.text))
	}
	b.WriteString("</")
	b.WriteString(n.name)
	b.WriteByte('>')
}

// child is the first child element called name, or nil.
func (n *xnode) child(name string) *xnode {
	if n == nil {
		return nil
	}
	for _, k := range n.kids {
		if k.name == name {
			return k
		}
	}
	return nil
}

// items are the <item> children of n (an EC2 list), nil-safe.
func (n *xnode) items() []*xnode {
	if n == nil {
		return nil
	}
	var out []*xnode
	for _, k := range n.kids {
		if k.name == "item" {
			out = append(out, k)
		}
	}
	return out
}

// get is the trimmed text of the child called name ("" when absent).
func (n *xnode) get(name string) string {
	if c := n.child(name); c != nil {
		return strings.TrimSpace(c.text)
	}
	return ""
}

// set replaces the text of the child called name, appending the child
// when moto left it out.
func (n *xnode) set(name, text string) {
	if c := n.child(name); c != nil {
		c.kids, c.text = nil, text
		return
	}
	n.kids = append(n.kids, leaf(name, text))
}

// filter keeps the children for which keep is true.
func (n *xnode) filter(keep func(*xnode) bool) {
	if n == nil {
		return
	}
	out := n.kids[:0]
	for _, k := range n.kids {
		if keep(k) {
			out = append(out, k)
		}
	}
	n.kids = out
}

// replace puts c in place of the child with c's name, or appends it.
func (n *xnode) replace(c *xnode) {
	for i, k := range n.kids {
		if k.name == c.name {
			n.kids[i] = c
			return
		}
	}
	n.kids = append(n.kids, c)
}

func leaf(name, text string) *xnode { return &xnode{name: name, text: text} }

func elem(name string, kids ...*xnode) *xnode {
	n := &xnode{name: name}
	for _, k := range kids {
		if k != nil {
			n.kids = append(n.kids, k)
		}
	}
	return n
}

// ec2Doc starts an EC2 query response document for action.
func ec2Doc(action string, kids ...*xnode) *xnode {
	n := elem(action+"Response", kids...)
	n.attr = []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "http://ec2.amazonaws.com/doc/2016-11-15/"}}
	n.kids = append(n.kids, leaf("requestId", "testbed-"+action))
	return n
}
