package iam

import (
	"go/ast"
	"go/token"
	"go/types"
	"strings"
)

// helperOps lists what the SDK's "feature" helpers call inside the SDK,
// out of the scan's sight, keyed by types.Func.FullName. Constructors that
// only keep the client map to no operations: the methods then used say
// what is called.
func helperOps(fullName string) (service string, ops []string, ok bool) {
	const mgr = sdkFeaturePrefix + "s3/manager"
	const tm = sdkFeaturePrefix + "s3/transfermanager"
	upload := []string{"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload"}
	switch fullName {
	case mgr + ".NewUploader":
		return "s3", upload, true
	case mgr + ".NewDownloader":
		return "s3", []string{"GetObject"}, true
	case mgr + ".GetBucketRegion":
		return "s3", []string{"HeadBucket"}, true
	case tm + ".New":
		return "s3", nil, true
	case "(*" + tm + ".Client).UploadObject", "(*" + tm + ".Client).UploadDirectory":
		return "s3", upload, true
	case "(*" + tm + ".Client).DownloadObject":
		return "s3", []string{"GetObject"}, true
	case "(*" + tm + ".Client).GetObject":
		return "s3", []string{"GetObject", "HeadObject"}, true
	case "(*" + tm + ".Client).DownloadDirectory":
		return "s3", []string{"ListObjectsV2", "GetObject"}, true
	}
	return "", nil, false
}

// sdkUse records the AWS operation a referenced function stands for, if any.
func (w *walker) sdkUse(fn *types.Func, id *ast.Ident) {
	sig := fn.Signature()
	if op, svc, ok := operationOf(fn, sig); ok {
		w.record(svc, op, "call", id.Pos())
		return
	}
	pkg := fn.Pkg()
	if pkg == nil {
		return
	}
	path := pkg.Path()
	switch {
	case strings.HasPrefix(path, sdkServicePrefix) && sig.Recv() == nil:
		// NewXPaginator(client XAPIClient, ...) and NewYWaiter(client ZAPIClient, ...).
		via := ""
		switch {
		case strings.HasPrefix(fn.Name(), "New") && strings.HasSuffix(fn.Name(), "Paginator"):
			via = "paginator"
		case strings.HasPrefix(fn.Name(), "New") && strings.HasSuffix(fn.Name(), "Waiter"):
			via = "waiter"
		default:
			return
		}
		if sig.Params().Len() == 0 {
			return
		}
		op, ok := apiClientOp(sig.Params().At(0).Type())
		if !ok {
			w.errs = append(w.errs, "cannot tell the operation behind "+fn.FullName()+": teach internal/docs/iam/sdk.go")
			return
		}
		w.record(serviceOf(path), op, via, id.Pos())
	case strings.HasPrefix(path, sdkFeaturePrefix) && !strings.HasPrefix(path, sdkFeaturePrefix+"ec2/imds"):
		// IMDS is not an IAM-authorised API; every other feature helper
		// that takes a client, and every method of a helper's client, must
		// be listed, or the scan would go blind.
		if svc, ops, ok := helperOps(fn.FullName()); ok {
			for _, op := range ops {
				w.record(svc, op, "helper", id.Pos())
			}
			return
		}
		if takesClient(sig) || (sig.Recv() != nil && namedKey(sig.Recv().Type()) == path+".Client") {
			w.errs = append(w.errs, "unknown SDK helper "+fn.FullName()+" calls AWS: list its operations in helperOps (internal/docs/iam/sdk.go)")
		}
	}
}

// operationOf recognises an operation method: (ctx, *svc.OpInput,
// ...func(*svc.Options)) named Op (or PresignOp), whether it is declared
// on an SDK client or on one of the project's interfaces over it.
func operationOf(fn *types.Func, sig *types.Signature) (op, service string, ok bool) {
	if sig.Params().Len() < 2 {
		return "", "", false
	}
	ptr, isPtr := sig.Params().At(1).Type().(*types.Pointer)
	if !isPtr {
		return "", "", false
	}
	named, isNamed := ptr.Elem().(*types.Named)
	if !isNamed || named.Obj().Pkg() == nil || !strings.HasPrefix(named.Obj().Pkg().Path(), sdkServicePrefix) {
		return "", "", false
	}
	in := named.Obj().Name()
	if !strings.HasSuffix(in, "Input") {
		return "", "", false
	}
	op = strings.TrimSuffix(in, "Input")
	if fn.Name() != op && fn.Name() != "Presign"+op {
		return "", "", false
	}
	return op, serviceOf(named.Obj().Pkg().Path()), true
}

// apiClientOp reads Op from a <service>.<Op>APIClient interface type.
func apiClientOp(t types.Type) (string, bool) {
	named, ok := t.(*types.Named)
	if !ok || !strings.HasSuffix(named.Obj().Name(), "APIClient") {
		return "", false
	}
	return strings.TrimSuffix(named.Obj().Name(), "APIClient"), true
}

// takesClient reports whether a signature has a parameter that is an SDK
// service client or one of its *APIClient interfaces.
func takesClient(sig *types.Signature) bool {
	for i := 0; i < sig.Params().Len(); i++ {
		t := sig.Params().At(i).Type()
		if p, ok := t.(*types.Pointer); ok {
			t = p.Elem()
		}
		n, ok := t.(*types.Named)
		if !ok || n.Obj().Pkg() == nil {
			continue
		}
		name := n.Obj().Name()
		if strings.HasPrefix(n.Obj().Pkg().Path(), sdkServicePrefix) && (name == "Client" || strings.HasSuffix(name, "APIClient")) {
			return true
		}
		if strings.HasSuffix(name, "APIClient") {
			return true
		}
	}
	return false
}

// serviceOf is the SDK package name of a service import path:
// .../service/ec2 and .../service/ec2/types give ec2.
func serviceOf(path string) string {
	rest := strings.TrimPrefix(path, sdkServicePrefix)
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// fieldUse records a set field of an SDK operation's input that needs
// actions of its own (fieldActions), in both shapes the code sets it:
// in.VersionId = ... and &s3.GetObjectInput{VersionId: ...}.
func (w *walker) fieldUse(info *types.Info, n ast.Node) {
	switch n := n.(type) {
	case *ast.SelectorExpr:
		sel, ok := info.Selections[n]
		if !ok || sel.Kind() != types.FieldVal {
			return
		}
		w.inputField(sel.Recv(), n.Sel.Name, n.Sel.Pos())
	case *ast.CompositeLit:
		t := info.TypeOf(n)
		if t == nil {
			return
		}
		for _, e := range n.Elts {
			if kv, ok := e.(*ast.KeyValueExpr); ok {
				if k, ok := kv.Key.(*ast.Ident); ok {
					w.inputField(t, k.Name, k.Pos())
				}
			}
		}
	}
}

// inputField records field of t when t is (a pointer to) an SDK
// <Op>Input whose field needs actions of its own.
func (w *walker) inputField(t types.Type, field string, at token.Pos) {
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	named, ok := t.(*types.Named)
	if !ok || named.Obj().Pkg() == nil || !strings.HasPrefix(named.Obj().Pkg().Path(), sdkServicePrefix) {
		return
	}
	op, ok := strings.CutSuffix(named.Obj().Name(), "Input")
	if !ok {
		return
	}
	svc := serviceOf(named.Obj().Pkg().Path())
	if len(fieldActions(svc, op, field)) > 0 {
		w.record(svc, op, "field "+field, at)
	}
}
