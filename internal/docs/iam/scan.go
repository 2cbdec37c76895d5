// Package iam finds every AWS API operation the product's binaries can call
// and checks that the shipped IAM policies allow exactly those (and no
// more). The scan is type-based (golang.org/x/tools/go/packages): an
// operation is a reference to a function whose signature takes a
// *<service>.<Op>Input, or a paginator or waiter constructor whose client
// parameter is a <service>.<Op>APIClient. That catches calls on SDK clients,
// on the project's own narrow interfaces over them, and method values.
//
// Which binary needs an operation is decided by reachability from its main
// package (rapid type analysis: a function is reached when reachable code
// names it; every method of a type is reached when reachable code names the
// type), so the daemon's instance policy and agentctl's workstation policy
// are checked separately even where both binaries share a package.
package iam

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/tools/go/packages"
)

const (
	sdkServicePrefix = "github.com/aws/aws-sdk-go-v2/service/"
	sdkFeaturePrefix = "github.com/aws/aws-sdk-go-v2/feature/"
)

// Call is one AWS operation referenced by the code.
type Call struct {
	Service   string // the SDK package name: ec2, s3, cloudwatch, codedeploy...
	Operation string // the API operation: CreateSnapshots
	Pos       string // file:line, relative to the module root
	Via       string // call, paginator, waiter, helper or field
	// Field is set when the code sets a field of the operation's input
	// that needs actions of its own (fieldActions): GetObjectInput's
	// VersionId, say.
	Field string
}

func (c Call) String() string {
	if c.Field != "" {
		return fmt.Sprintf("%s.%s.%s (%s at %s)", c.Service, c.Operation, c.Field, c.Via, c.Pos)
	}
	return fmt.Sprintf("%s.%s (%s at %s)", c.Service, c.Operation, c.Via, c.Pos)
}

// decl is a function, method or package-level variable of the loaded
// source, with the type information to resolve what it names.
type decl struct {
	node ast.Node
	info *types.Info
}

// Program is the loaded source of the module, ready for Calls.
type Program struct {
	dir   string
	fset  *token.FileSet
	decls map[string]decl     // function, method or var key -> its declaration
	types map[string]decl     // named type key -> its type spec
	meths map[string][]string // named type key -> keys of its methods
	mains map[string]bool     // import paths of loaded main packages
}

// Load type-checks the module's packages under dir (patterns as for
// `go list`, e.g. "./..."); their dependencies come from export data, which
// keeps the SDK's large packages out of the parse.
func Load(dir string, patterns ...string) (*Program, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("iam: %w", err)
	}
	cfg := &packages.Config{
		Mode: packages.NeedName | packages.NeedFiles | packages.NeedSyntax |
			packages.NeedTypes | packages.NeedTypesInfo | packages.NeedImports,
		Dir: abs,
		// The release build's settings (Makefile: pkgbin), which `make test`
		// vets with: `go list -export` then finds every dependency compiled
		// instead of compiling the SDK once more.
		Env:        append(os.Environ(), "CGO_ENABLED=0"),
		BuildFlags: []string{"-trimpath"},
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return nil, fmt.Errorf("iam: load %v: %w", patterns, err)
	}
	var errs []string
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			errs = append(errs, e.Error())
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("iam: the code does not type-check:\n  %s", strings.Join(errs, "\n  "))
	}
	prog := &Program{dir: abs, fset: cfg.Fset, decls: map[string]decl{}, types: map[string]decl{},
		meths: map[string][]string{}, mains: map[string]bool{}}
	for _, p := range pkgs {
		if prog.fset == nil {
			prog.fset = p.Fset
		}
		if p.Name == "main" {
			prog.mains[p.PkgPath] = true
		}
		for _, f := range p.Syntax {
			prog.index(p, f)
		}
	}
	return prog, nil
}

// index records the declarations of one file under stable string keys:
// the same object seen from two packages is two *types.Func values, so
// pointers cannot be the keys.
func (p *Program) index(pkg *packages.Package, f *ast.File) {
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			fn, ok := pkg.TypesInfo.Defs[d.Name].(*types.Func)
			if !ok {
				continue
			}
			key := funcKey(fn)
			p.decls[key] = decl{node: d, info: pkg.TypesInfo}
			if recv := fn.Signature().Recv(); recv != nil {
				if tk := namedKey(recv.Type()); tk != "" {
					p.meths[tk] = append(p.meths[tk], key)
				}
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if tn, ok := pkg.TypesInfo.Defs[s.Name].(*types.TypeName); ok {
						p.types[objKey(tn)] = decl{node: s, info: pkg.TypesInfo}
					}
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if v, ok := pkg.TypesInfo.Defs[n].(*types.Var); ok && v.Parent() == v.Pkg().Scope() {
							p.decls[objKey(v)] = decl{node: s, info: pkg.TypesInfo}
						}
					}
				}
			}
		}
	}
}

// Calls returns the AWS operations reachable from the main package with
// the given import path, sorted and without duplicates by position.
func (p *Program) Calls(mainPkg string) ([]Call, error) {
	if !p.mains[mainPkg] {
		return nil, fmt.Errorf("iam: %s is not a loaded main package", mainPkg)
	}
	w := &walker{p: p, seen: map[string]bool{}, calls: map[string]Call{}}
	w.reach(mainPkg + ".main")
	for len(w.queue) > 0 {
		k := w.queue[len(w.queue)-1]
		w.queue = w.queue[:len(w.queue)-1]
		w.visit(k)
	}
	if len(w.errs) > 0 {
		return nil, fmt.Errorf("iam: %s", strings.Join(w.errs, "; "))
	}
	out := make([]Call, 0, len(w.calls))
	for _, c := range w.calls {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		ki, kj := out[i].Service+out[i].Operation+out[i].Field, out[j].Service+out[j].Operation+out[j].Field
		if ki != kj {
			return ki < kj
		}
		return out[i].Pos < out[j].Pos
	})
	return out, nil
}

type walker struct {
	p     *Program
	seen  map[string]bool
	queue []string
	calls map[string]Call
	errs  []string
}

func (w *walker) reach(key string) {
	if !w.seen[key] {
		w.seen[key] = true
		w.queue = append(w.queue, key)
	}
}

func (w *walker) visit(key string) {
	if d, ok := w.p.decls[key]; ok {
		w.walk(d)
	}
	if d, ok := w.p.types[key]; ok {
		// A reached type brings its methods (they may be called through an
		// interface) and the types it is built from (promoted methods).
		w.walk(d)
		for _, m := range w.p.meths[key] {
			w.reach(m)
		}
	}
}

func (w *walker) walk(d decl) {
	ast.Inspect(d.node, func(n ast.Node) bool {
		w.fieldUse(d.info, n)
		id, ok := n.(*ast.Ident)
		if !ok {
			return true
		}
		obj := d.info.Uses[id]
		switch o := obj.(type) {
		case *types.Func:
			w.reach(funcKey(o))
			w.sdkUse(o, id)
		case *types.TypeName:
			w.reach(objKey(o))
		case *types.Var:
			if o.Pkg() != nil && o.Parent() == o.Pkg().Scope() {
				w.reach(objKey(o))
			}
		}
		return true
	})
}

func (w *walker) record(service, op, via string, at token.Pos) {
	pos := w.p.fset.Position(at)
	file := pos.Filename
	if rel, err := filepath.Rel(w.p.dir, file); err == nil {
		file = rel
	}
	c := Call{Service: service, Operation: op, Pos: fmt.Sprintf("%s:%d", filepath.ToSlash(file), pos.Line), Via: via}
	if f, ok := strings.CutPrefix(via, "field "); ok {
		c.Via, c.Field = "field", f
	}
	w.calls[c.Service+"."+c.Operation+"."+c.Field+"@"+c.Pos] = c
}

func funcKey(fn *types.Func) string {
	return fn.Origin().FullName()
}

func objKey(o types.Object) string {
	if o.Pkg() == nil {
		return o.Name()
	}
	return o.Pkg().Path() + "." + o.Name()
}

// namedKey is the key of the named type behind t (through one pointer).
func namedKey(t types.Type) string {
	if ptr, ok := t.(*types.Pointer); ok {
		t = ptr.Elem()
	}
	if n, ok := t.(*types.Named); ok {
		return objKey(n.Origin().Obj())
	}
	return ""
}
