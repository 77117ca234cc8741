package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/workflow"
)

func runWorkflow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "install" && args[0] != "list") {
		fmt.Fprint(stderr, "Usage: tidings workflow install|list [flags]\n\n  install  save workflow definitions for a tenant (the built-ins, or files) and activate them\n  list     show a tenant's workflows with status and version\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usageError{"workflow needs install or list"}
	}
	fs := newFlags("workflow "+args[0]+" --tenant TENANT [flags]", `install saves the built-in workflows (--builtins: EOB notice with a reminder;
appointment confirmation, reminders, survey, cancellation and no-show notices)
and/or definitions from JSON or YAML files (--file, repeatable), validating
each and reporting every problem. A built-in the tenant already has is left
as it is (paused, or changed); new ones are installed active. A --file
definition is saved as a new version and, with --activate (the default),
made active. list shows the tenant's workflows.`, stderr)
	tenant := fs.String("tenant", "", "tenant")
	builtins := fs.Bool("builtins", false, "install the built-in workflows")
	activate := fs.Bool("activate", true, "activate the definitions from --file (new built-ins are always installed active)")
	var files multiFlag
	fs.Var(&files, "file", "a workflow definition (JSON or YAML); repeatable")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if !subscriptionID.MatchString(*tenant) {
		fs.Usage()
		return usageError{"--tenant is required"}
	}
	st, err := openOperatorStore(ctx, false)
	if err != nil {
		return err
	}
	defer st.Close()
	if args[0] == "list" {
		wfs, err := st.Workflows(ctx, *tenant)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATUS\tVERSION\tTRIGGER\tPRIORITY")
		for _, w := range wfs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", w.ID, w.Status, w.Version, w.Trigger, w.Priority)
		}
		return tw.Flush()
	}
	if !*builtins && len(files) == 0 {
		return usageError{"install needs --builtins or --file"}
	}
	if err := st.EnsureTenant(ctx, *tenant, *tenant); err != nil {
		return err
	}
	builtin := journey.Registry(nil).Workflow
	reg := journey.Registry(func(id string) bool {
		ok, _ := st.WorkflowExists(ctx, *tenant, id)
		return ok || (*builtins && builtin(id)) // installed by this command too
	})
	var defs []workflow.Definition
	var problems []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		d, err := workflow.Parse(b)
		if err != nil {
			problems = append(problems, f+": "+err.Error())
			continue
		}
		for _, p := range workflow.Validate(d, reg) {
			problems = append(problems, f+": "+p.String())
		}
		defs = append(defs, d)
	}
	if len(problems) > 0 {
		return fmt.Errorf("definitions are not valid:\n  - %s", strings.Join(problems, "\n  - "))
	}
	for _, d := range defs {
		exists, err := st.WorkflowExists(ctx, *tenant, d.ID)
		if err != nil {
			return err
		}
		v, err := st.SaveWorkflow(ctx, *tenant, d, !exists)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "saved %s version %d\n", d.ID, v)
	}
	if *activate {
		for _, d := range defs {
			if err := st.SetWorkflowStatus(ctx, *tenant, d.ID, journey.WorkflowActive); err != nil && !errors.Is(err, fault.NotFound) {
				return err
			}
		}
	}
	if *builtins {
		// New built-ins are installed active; ones the tenant has (perhaps
		// paused or changed) are left as they are, so this can run at every start.
		if err := st.InstallWorkflows(ctx, *tenant, workflow.Builtins()); err != nil {
			return err
		}
		for _, d := range workflow.Builtins() {
			fmt.Fprintf(stdout, "built-in %s present\n", d.ID)
		}
	}
	wfs, err := st.Workflows(ctx, *tenant)
	if err != nil {
		return err
	}
	active := 0
	for _, w := range wfs {
		if w.Status == journey.WorkflowActive {
			active++
		}
	}
	fmt.Fprintf(stdout, "%d workflows active for tenant %s\n", active, *tenant)
	return nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
