package hooks

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrorCode is CodeDeploy's script error code, kept because users grep for
// it and because the service receives it in the command's diagnostics.
type ErrorCode int

// The values are CodeDeploy's (hook_executor.rb ScriptError and the crash
// recovery code 7); do not renumber them.
const (
	Succeeded           ErrorCode = 0
	ScriptMissing       ErrorCode = 1
	ScriptNotExecutable ErrorCode = 2
	ScriptTimedOut      ErrorCode = 3
	ScriptFailed        ErrorCode = 4
	UnknownError        ErrorCode = 5
	// OutputsLeftOpen is what CodeDeploy reports when a background child
	// keeps the script's output pipes open. Run never returns it: the
	// agent stops waiting for such a pipe (see drain.go) and reports it in
	// Result.Held and Result.Differences instead.
	OutputsLeftOpen ErrorCode = 6
	// FailedAfterRestart is reported by crash recovery (an agent restarted
	// in the middle of a lifecycle event), not by Run.
	FailedAfterRestart ErrorCode = 7
)

// String returns the code's name, e.g. "ScriptTimedOut".
func (c ErrorCode) String() string {
	switch c {
	case Succeeded:
		return "Succeeded"
	case ScriptMissing:
		return "ScriptMissing"
	case ScriptNotExecutable:
		return "ScriptNotExecutable"
	case ScriptTimedOut:
		return "ScriptTimedOut"
	case ScriptFailed:
		return "ScriptFailed"
	case UnknownError:
		return "UnknownError"
	case OutputsLeftOpen:
		return "OutputsLeftOpen"
	case FailedAfterRestart:
		return "FailedAfterRestart"
	}
	return "ErrorCode(" + strconv.Itoa(int(c)) + ")"
}

// Error is the error Result.Err returns; errors.As gives callers the code.
type Error struct {
	Event    string
	Location string
	Code     ErrorCode
	// Message is the CodeDeploy-style text, unchanged, so that what users
	// grep for in CodeDeploy's logs is found in ours too.
	Message string
}

func (e *Error) Error() string {
	prefix := ""
	if e.Event != "" {
		prefix = e.Event + ": "
	}
	return fmt.Sprintf("%s%s (%s, error code %d)", prefix, e.Message, e.Code, int(e.Code))
}

// The message texts below reproduce CodeDeploy's where CodeDeploy has one
// (hook_executor.rb); the others follow the same "Script at specified
// location: <location> ..." shape so one grep finds every hook failure.

// scriptAt is the common prefix; CodeDeploy names the runas user only in
// the exit-code message, and so do we.
func scriptAt(location string) string {
	return "Script at specified location: " + location
}

func msgOutside(location, dir string) string {
	return scriptAt(location) + " is outside the revision directory " + dir + "; refusing to run it"
}

func msgMissing(path, detail string) string {
	m := "Script does not exist at specified location: " + path
	if detail != "" {
		m += " (" + detail + ")"
	}
	return m
}

func msgChmod(location string, err error) string {
	return "Unable to set script at specified location: " + location + " as executable: " + err.Error()
}

func msgTimedOut(location string, timeout time.Duration) string {
	return scriptAt(location) + " failed to complete in " + seconds(timeout) + " seconds"
}

func msgStopping(location string, cause error) string {
	return scriptAt(location) + " was stopped because the agent is stopping (" + cause.Error() + ")"
}

func msgNotRun(location string, cause error) string {
	return scriptAt(location) + " was not run because the agent is stopping (" + cause.Error() + ")"
}

func msgExitCode(location, runAs string, code int) string {
	return scriptAt(location) + asUser(runAs) + " failed with exit code " + strconv.Itoa(code)
}

func msgSignal(location, runAs, signal string) string {
	return scriptAt(location) + asUser(runAs) + " failed with signal " + signal
}

// msgOutputHeld is CodeDeploy's failure text for an output left open
// (hook_executor.rb: "failed to close STDOUT"), with what this agent did
// instead and how to fix the script.
func msgOutputHeld(location, stream string, pids []int) string {
	who := "a process the script left running"
	if len(pids) > 0 {
		who = fmt.Sprintf("a process the script left running (pids %v in its process group)", pids)
	}
	return fmt.Sprintf("%s failed to close %s (%s, error code %d): %s still holds it open. CodeDeploy's agent fails the script with this once its timeout has passed; this agent goes on and discards that process's further output. Redirect it, e.g. `./server > /var/log/app.log 2>&1 &`",
		scriptAt(location), strings.ToUpper(stream), OutputsLeftOpen, int(OutputsLeftOpen), who)
}

func asUser(runAs string) string {
	if runAs == "" {
		return ""
	}
	return " run as user " + runAs
}

// seconds formats a timeout the way the appspec writes it: whole seconds
// without a fraction ("3600"), shorter ones exactly ("0.5").
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}
