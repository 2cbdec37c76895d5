#!/bin/bash
# aws-acceptance.sh: the opt-in acceptance run on a real AWS account.
#
#   scripts/aws-acceptance.sh --yes-create-resources --package dist/rollback-agent-1.2.3-1.x86_64.rpm
#
# It creates the CloudFormation stack of packaging/cloudformation, launches
# one small instance from its launch template (user data installs the
# agent with scripts/install.sh), pushes a good revision and a failing one
# from this workstation, and checks on the host (through SSM Run Command)
# the automatic rollback, a volume restore, a root restore, and, from the
# workstation, agentctl restore-instance with an Elastic IP. Everything it
# creates is tagged rollback-agent:acceptance=RUN and deleted on exit, also
# on failure or Ctrl-C. It refuses to run without credentials and without
# --yes-create-resources, and prints the cost estimate first.
#
# --test-bed runs the AWS side against the endpoint in AWS_ENDPOINT_URL
# (the project's test bed: moto behind its proxy) and skips, by design and
# saying so, the steps that need a real host; `make test` runs it that way.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: aws-acceptance.sh --yes-create-resources [--package FILE.rpm] [options]

  --yes-create-resources   required: create (and delete) billable resources in the account
  --package FILE           the rollback-agent .rpm for the instance (make rpm); required on AWS
  --region REGION          default: AWS_REGION, AWS_DEFAULT_REGION or the profile's
  --instance-type TYPE     default t3.micro (x86_64; the package's architecture must match)
  --agentctl PATH          default: bin/agentctl of this checkout (make build)
  --test-bed               AWS side against AWS_ENDPOINT_URL (the test bed); host steps skipped
  -h, --help               this text
EOF
}

say() { echo "acceptance: [${SECONDS}s] $*"; }
die() {
	echo "acceptance: $*" >&2
	exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
yes=false
bed=false
package=""
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
itype=t3.micro
agentctl="$root/bin/agentctl"
while [ $# -gt 0 ]; do
	case "$1" in
	--yes-create-resources) yes=true; shift ;;
	--package) package=${2:?--package needs a file}; shift 2 ;;
	--region) region=${2:?--region needs a value}; shift 2 ;;
	--instance-type) itype=${2:?--instance-type needs a value}; shift 2 ;;
	--agentctl) agentctl=${2:?--agentctl needs a path}; shift 2 ;;
	--test-bed) bed=true; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; echo "acceptance: unknown option: $1" >&2; exit 2 ;;
	esac
done

# The estimate comes first, before anything is asked of AWS. List prices
# of us-east-1 (other regions differ by a few percent): EC2 on-demand
# (https://aws.amazon.com/ec2/pricing/on-demand/), EBS gp3 and snapshots
# (https://aws.amazon.com/ebs/pricing/), public IPv4 addresses
# (https://aws.amazon.com/vpc/pricing/), CloudWatch alarms
# (https://aws.amazon.com/cloudwatch/pricing/). CloudFormation, IAM, SSM
# Run Command and this much S3 cost nothing.
cat <<EOF
acceptance: cost estimate (us-east-1 list prices; a run takes about 45 minutes):
  2 x $itype on-demand, about 45 and 20 minutes (t3.micro \$0.0104/h)   ~\$0.01
  EBS gp3, 2 x 8 GiB per instance (\$0.08/GB-month)                     <\$0.01
  snapshots and 1 AMI of those volumes, deleted at the end (\$0.05/GB-month)  <\$0.01
  3 public IPv4 addresses, one of them an Elastic IP (\$0.005/h each)   ~\$0.01
  1 CloudWatch alarm (\$0.10 a month, prorated)                          <\$0.01
  total                                                                 about \$0.05
  left behind by a failed cleanup, it would cost about \$0.70 a day: the end of the run lists what is left
EOF

if [ "$yes" != true ]; then
	echo "acceptance: refusing: this creates billable resources in your AWS account (above); run again with --yes-create-resources" >&2
	exit 2
fi
command -v aws >/dev/null || die "aws (awscli) is not installed"
command -v jq >/dev/null || die "jq is not installed"
[ -x "$agentctl" ] || die "no agentctl at $agentctl: run make build, or pass --agentctl"
if [ "$bed" = true ]; then
	[ -n "${AWS_ENDPOINT_URL:-}" ] || die "--test-bed needs AWS_ENDPOINT_URL (the test bed's proxy)"
	region=${region:-us-east-1}
else
	[ -n "$package" ] || die "--package is required: build it with make rpm, then --package dist/rollback-agent-VERSION-RELEASE.x86_64.rpm"
	[ -f "$package" ] || die "no package at $package"
fi
[ -n "$region" ] || region=$(aws configure get region 2>/dev/null || true)
[ -n "$region" ] || { echo "acceptance: refusing: no region (--region, or AWS_REGION)" >&2; exit 2; }
export AWS_REGION=$region AWS_DEFAULT_REGION=$region AWS_PAGER=""
if ! who=$(aws sts get-caller-identity --query Arn --output text 2>&1); then
	echo "acceptance: refusing: no working AWS credentials ($who)" >&2
	exit 2
fi
say "account identity $who, region $region"

run="ra-accept-$(date +%s)-$RANDOM"
stack=$run
bucket=$run
app=accept$(echo "$run" | tr -dc '0-9')
prefix=releases
tag="Key=rollback-agent:acceptance,Value=$run"
work=$(mktemp -d "${TMPDIR:-/tmp}/rollback-agent-acceptance.XXXXXX")
instance=""
alloc=""
policies=""
passed=()
skipped=()

pass() {
	passed+=("$1")
	say "PASS: $1"
}
skip_host() {
	skipped+=("$1")
	say "SKIPPED (needs a real host; test bed by design): $1"
}

# cleanup deletes everything the run made, in dependency order, and says
# what is left. It runs to the end: Ctrl-C and TERM are ignored meanwhile.
cleaned=false
cleanup() {
	local code=$?
	trap '' INT TERM
	[ "$cleaned" = true ] && return
	cleaned=true
	say "cleaning up run $run (exit $code)"
	local ids
	ids=$(aws ec2 describe-instances --filters "Name=tag:rollback-agent:acceptance,Values=$run" "Name=instance-state-name,Values=pending,running,stopping,stopped" \
		--query 'Reservations[].Instances[].InstanceId' --output text 2>/dev/null || true)
	if [ -n "$ids" ]; then
		# shellcheck disable=SC2086 # a list of ids
		aws ec2 terminate-instances --instance-ids $ids >/dev/null || true
		# shellcheck disable=SC2086
		aws ec2 wait instance-terminated --instance-ids $ids || true
		say "terminated $ids"
	fi
	for a in $(aws ec2 describe-addresses --filters "Name=tag:rollback-agent:acceptance,Values=$run" --query 'Addresses[].AllocationId' --output text 2>/dev/null || true); do
		aws ec2 release-address --allocation-id "$a" || true
	done
	for i in $(aws ec2 describe-images --owners self --filters "Name=tag:rollback-agent:app,Values=$app" --query 'Images[].ImageId' --output text 2>/dev/null || true); do
		aws ec2 deregister-image --image-id "$i" >/dev/null || true
	done
	for s in $(aws ec2 describe-snapshots --owner-ids self --filters "Name=tag:rollback-agent:app,Values=$app" --query 'Snapshots[].SnapshotId' --output text 2>/dev/null || true); do
		aws ec2 delete-snapshot --snapshot-id "$s" || true
	done
	for v in $(aws ec2 describe-volumes --filters "Name=tag:rollback-agent:app,Values=$app" "Name=status,Values=available" --query 'Volumes[].VolumeId' --output text 2>/dev/null || true); do
		aws ec2 delete-volume --volume-id "$v" || true
	done
	local role
	role=$(aws cloudformation describe-stacks --stack-name "$stack" --query "Stacks[0].Outputs[?OutputKey=='InstanceRoleName'].OutputValue" --output text 2>/dev/null || true)
	[ "$role" = None ] && role=""
	policies=$(aws cloudformation describe-stack-resources --stack-name "$stack" \
		--query "StackResources[?ResourceType=='AWS::IAM::ManagedPolicy'].PhysicalResourceId" --output text 2>/dev/null || true)
	if [ -n "$role" ] && [ "$bed" != true ]; then
		aws iam detach-role-policy --role-name "$role" --policy-arn "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" 2>/dev/null || true
	fi
	if [ -n "$role" ] && [ "$bed" = true ]; then
		# The test bed only: moto 5.2.1 deletes a stack's role before it
		# detaches the stack's managed policies (DeleteConflict, the
		# stack stays); CloudFormation on AWS detaches them first.
		for p in $(aws iam list-attached-role-policies --role-name "$role" --query 'AttachedPolicies[].PolicyArn' --output text 2>/dev/null || true); do
			aws iam detach-role-policy --role-name "$role" --policy-arn "$p" || true
		done
	fi
	if aws s3api head-bucket --bucket "$bucket" 2>/dev/null; then
		empty_bucket || true
	fi
	if aws cloudformation describe-stacks --stack-name "$stack" >/dev/null 2>&1; then
		aws cloudformation delete-stack --stack-name "$stack" || true
		aws cloudformation wait stack-delete-complete --stack-name "$stack" || say "the stack $stack did not delete cleanly"
	fi
	# The stack's managed policies go with it on AWS; moto 5.2.1 leaves
	# them. A policy still there is deleted here (a no-op on AWS).
	for p in $policies; do
		if aws iam get-policy --policy-arn "$p" >/dev/null 2>&1; then
			aws iam delete-policy --policy-arn "$p" || true
		fi
	done
	rm -rf "$work"
	leftovers
}

# empty_bucket deletes every version and delete marker (the bucket is
# versioned): CloudFormation only deletes an empty bucket.
empty_bucket() {
	local page
	page=$(aws s3api list-object-versions --bucket "$bucket" --output json)
	echo "$page" | jq -c '[(.Versions // [])[], (.DeleteMarkers // [])[] | {Key, VersionId}] | _nwise(500) | {Objects: ., Quiet: true}' |
		while read -r batch; do
			aws s3api delete-objects --bucket "$bucket" --delete "$batch" >/dev/null
		done
	aws s3 rm --recursive --quiet "s3://$bucket" || true
}

# leftovers lists what still carries the run's tags, and fails the run
# when anything does. Terminated instances keep their tags for a while
# (the tagging API still lists them): instances are asked by state.
leftovers() {
	local left
	# shellcheck disable=SC2016 # backquotes are JMESPath literals
	left=$(aws resourcegroupstaggingapi get-resources --tag-filters "Key=rollback-agent:acceptance,Values=$run" \
		--query 'ResourceTagMappingList[?!contains(ResourceARN, `:instance/`)].ResourceARN' --output text 2>/dev/null || true)
	left="$left $(aws ec2 describe-instances --filters "Name=tag:rollback-agent:acceptance,Values=$run" "Name=instance-state-name,Values=pending,running,stopping,stopped" --query 'Reservations[].Instances[].InstanceId' --output text 2>/dev/null || true)"
	left="$left $(aws ec2 describe-volumes --filters "Name=tag:rollback-agent:app,Values=$app" --query 'Volumes[].VolumeId' --output text 2>/dev/null || true)"
	left="$left $(aws ec2 describe-snapshots --owner-ids self --filters "Name=tag:rollback-agent:app,Values=$app" --query 'Snapshots[].SnapshotId' --output text 2>/dev/null || true)"
	if aws cloudformation describe-stacks --stack-name "$stack" --query 'Stacks[0].StackStatus' --output text 2>/dev/null | grep -qv DELETE_COMPLETE; then
		left="$left stack:$stack"
	fi
	for p in $policies; do
		aws iam get-policy --policy-arn "$p" >/dev/null 2>&1 && left="$left $p"
	done
	left=$(echo "$left" | tr -s ' \t' '\n' | grep -v -e '^$' -e '^None$' | sort -u | tr '\n' ' ' || true)
	if [ -n "$left" ]; then
		say "LEFT BEHIND (delete by hand; tagged rollback-agent:acceptance=$run or rollback-agent:app=$app): $left"
		exit 1
	fi
	say "cleanup done: nothing tagged rollback-agent:acceptance=$run or rollback-agent:app=$app is left"
}

trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

say "run $run: stack $stack, bucket $bucket, application $app"
aws cloudformation create-stack --stack-name "$stack" --template-body "file://$root/packaging/cloudformation/rollback-agent.yaml" \
	--capabilities CAPABILITY_IAM --tags "$tag" --parameters \
	"ParameterKey=ApplicationName,ParameterValue=$app" "ParameterKey=ReleaseBucket,ParameterValue=$bucket" \
	"ParameterKey=ReleasePrefix,ParameterValue=$prefix" "ParameterKey=CreateHealthAlarm,ParameterValue=true" \
	"ParameterKey=InstanceType,ParameterValue=$itype" "ParameterKey=Ladder,ParameterValue=revision\\,volumes\\,root" >/dev/null
aws cloudformation wait stack-create-complete --stack-name "$stack"
out() { aws cloudformation describe-stacks --stack-name "$stack" --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text; }
lt=$(out LaunchTemplateId)
role=$(out InstanceRoleName)
channel=$(out ChannelUrl)
say "stack created: launch template $lt, role $role, channel $channel"
pass "CloudFormation stack $stack"

aws s3 cp --only-show-errors "$root/scripts/install.sh" "s3://$bucket/$prefix/rollback-agent/install.sh"
if [ "$bed" = true ]; then
	skip_host "upload of the package (no package is built for the test bed)"
else
	aws s3 cp --only-show-errors "$package" "s3://$bucket/$prefix/rollback-agent/rollback-agent.rpm"
	# SSM Run Command is how this run looks at the host; the product's
	# policy does not need it, so it is attached for the run only.
	aws iam attach-role-policy --role-name "$role" --policy-arn "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
fi
pass "installer${package:+ and package} in s3://$bucket/$prefix/rollback-agent/"

instance=$(aws ec2 run-instances --launch-template "LaunchTemplateId=$lt" --count 1 \
	--tag-specifications "ResourceType=instance,Tags=[{$tag}]" "ResourceType=volume,Tags=[{$tag}]" \
	--query 'Instances[0].InstanceId' --output text)
aws ec2 wait instance-running --instance-ids "$instance"
alloc=$(aws ec2 allocate-address --domain vpc --tag-specifications "ResourceType=elastic-ip,Tags=[{$tag}]" --query AllocationId --output text)
aws ec2 associate-address --allocation-id "$alloc" --instance-id "$instance" >/dev/null
pass "instance $instance from the launch template, Elastic IP $alloc"

# host_run CMD: runs CMD as root on the instance through SSM Run Command
# and prints its output; fails when CMD fails.
host_run() {
	local id status
	id=$(aws ssm send-command --instance-ids "$instance" --document-name AWS-RunShellScript \
		--parameters "$(jq -cn --arg c "$1" '{commands: [$c]}')" --query Command.CommandId --output text)
	for _ in $(seq 1 120); do
		status=$(aws ssm get-command-invocation --command-id "$id" --instance-id "$instance" --query Status --output text 2>/dev/null || echo Pending)
		case "$status" in
		Success)
			aws ssm get-command-invocation --command-id "$id" --instance-id "$instance" --query StandardOutputContent --output text
			return 0
			;;
		Failed | Cancelled | TimedOut)
			aws ssm get-command-invocation --command-id "$id" --instance-id "$instance" --query '[StandardOutputContent,StandardErrorContent]' --output text >&2
			return 1
			;;
		esac
		sleep 5
	done
	return 1
}

# host_wait CMD: runs CMD on the host until it succeeds (10 minutes).
host_wait() {
	for _ in $(seq 1 60); do
		if out=$(host_run "$1" 2>/dev/null); then
			echo "$out"
			return 0
		fi
		sleep 10
	done
	die "on the host, never succeeded: $1"
}

keys="$work/keys"
mkdir -p "$keys"
"$agentctl" keygen --secret-key "$keys/release.key" --public-key "$keys/release.pub" >/dev/null
revision() { # revision DIR VERSION VALIDATE-EXIT
	mkdir -p "$1/scripts"
	echo "$2" >"$1/version.txt"
	printf '#!/bin/sh\necho validating %s\nexit %s\n' "$2" "$3" >"$1/scripts/validate_service.sh"
	chmod 0755 "$1/scripts/validate_service.sh"
}
push() { # push DIR VERSION
	"$agentctl" push "$1" --bucket "$bucket" --prefix "$prefix" --app "$app" --version "$2" \
		--sign-key "$keys/release.key" --channel prod --destination "/opt/$app" >/dev/null
}

if [ "$bed" = true ]; then
	skip_host "the agent starts from user data (install.sh), and agentctl doctor passes on the host"
else
	aws ec2 wait instance-status-ok --instance-ids "$instance"
	host_wait "agentctl status" >/dev/null
	host_run "agentctl doctor" || die "agentctl doctor failed on the host (above)"
	pass "the agent runs from user data, and agentctl doctor passes on the host"
fi

revision "$work/v1" v1 0
push "$work/v1" v1
pass "workstation: v1 pushed to the channel"
if [ "$bed" = true ]; then
	skip_host "v1 deployed by the agent, with a checkpoint"
else
	host_wait "agentctl history -o json | jq -e '.deployments[] | select(.revision == \"v1\" and .status == \"succeeded\")'" >/dev/null
	pass "v1 deployed by the agent"
fi

revision "$work/v2" v2 1
push "$work/v2" v2
pass "workstation: v2 (its ValidateService fails) pushed to the channel"
if [ "$bed" = true ]; then
	skip_host "v2 fails and the agent rolls back to v1 by itself"
	skip_host "a volume restore from a checkpoint"
	skip_host "a root restore from a checkpoint (the instance reboots)"
	skip_host "an AMI checkpoint taken by the agent (the test bed makes one with CreateImage in its place)"
	image=$(aws ec2 create-image --instance-id "$instance" --name "$app-stand-in" --no-reboot \
		--tag-specifications "ResourceType=image,Tags=[{$tag},{Key=rollback-agent:app,Value=$app},{Key=rollback-agent:managed,Value=true}]" \
		--query ImageId --output text)
else
	host_wait "agentctl history -o json | jq -e '.deployments[] | select(.revision == \"v2\" and .status == \"rolled_back\")'" >/dev/null
	[ "$(host_run "cat /opt/$app/version.txt")" = v1 ] || die "after v2's rollback the host does not serve v1"
	pass "v2 failed and the agent rolled back to v1 by itself"

	host_run "echo data-v1 > /data/acceptance" >/dev/null
	cp=$(host_run "agentctl checkpoint create --wait --timeout 30m -o json" | jq -r .checkpoint.id)
	host_run "echo data-v2 > /data/acceptance" >/dev/null
	host_run "agentctl checkpoint restore $cp --volumes --wait --timeout 30m" >/dev/null
	[ "$(host_run "cat /data/acceptance")" = data-v1 ] || die "after the volume restore /data/acceptance is not data-v1"
	pass "volume restore from $cp"

	host_run "echo root-v1 > /etc/rollback-agent-acceptance" >/dev/null
	cp=$(host_run "agentctl checkpoint create --wait --timeout 30m -o json" | jq -r .checkpoint.id)
	host_run "echo root-v2 > /etc/rollback-agent-acceptance" >/dev/null
	host_run "agentctl checkpoint restore $cp --root" >/dev/null || true # the host reboots under it
	sleep 60
	aws ec2 wait instance-status-ok --instance-ids "$instance"
	host_wait "test \"\$(cat /etc/rollback-agent-acceptance)\" = root-v1" >/dev/null
	host_wait "agentctl history -o json | jq -e '.deployments[0].status == \"succeeded\" or .deployments[0].status == \"rolled_back\"'" >/dev/null
	pass "root restore from $cp, finished after the reboot"

	image=$(host_run "agentctl checkpoint create --kind ami --wait --timeout 60m -o json" | jq -r .checkpoint.image.image_id)
	pass "AMI checkpoint $image taken by the agent"
fi

old_ip=$(aws ec2 describe-addresses --allocation-ids "$alloc" --query 'Addresses[0].PublicIp' --output text)
res=$("$agentctl" restore-instance --instance "$instance" --image "$image" --eip "$alloc" --wait-for 20m --timeout 30m -o json)
new=$(echo "$res" | jq -r .new_instance_id)
if [ -z "$new" ] || [ "$new" = null ]; then
	die "restore-instance gave no new instance: $res"
fi
now=$(aws ec2 describe-addresses --allocation-ids "$alloc" --query 'Addresses[0].[InstanceId,PublicIp]' --output text)
[ "$now" = "$new	$old_ip" ] || die "the Elastic IP $alloc is at '$now', want $new with $old_ip"
state=$(aws ec2 describe-instances --instance-ids "$instance" --query 'Reservations[0].Instances[0].State.Name' --output text)
case "$state" in stopping | stopped) ;; *) die "the old instance $instance is $state, want stopped" ;; esac
pass "restore-instance: $new from $image has the Elastic IP $old_ip; $instance is $state"

say "${#passed[@]} step(s) passed${skipped:+, ${#skipped[@]} skipped by design (test bed)}"
