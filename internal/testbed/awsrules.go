package testbed

// awsRule is one behaviour of AWS the bed plays because moto does not:
// what AWS does, where AWS says so, what moto does instead, how the bed
// plays it, whether it is on in every test (AWS always behaves so) or a
// fault a test turns on, and the tests of the agent through it
// (internal/e2e). TestAWSRulesTable checks every source is a link and
// every test exists.
type awsRule struct {
	Name   string
	AWS    string
	Source string
	Moto   string
	Bed    string
	On     bool // false: a fault, turned on by the method Bed names
	Tests  []string
}

// awsRules is the table, with routes() (what the proxy patches of moto's
// answers) the whole of what the bed adds to moto for EC2 and S3.
func awsRules() []awsRule {
	return []awsRule{
		{"eventual consistency",
			"for a while after a create, calls naming the new snapshot, image, volume or instance answer InvalidSnapshot.NotFound, InvalidAMIID.NotFound, InvalidVolume.NotFound, InvalidInstanceID.NotFound, and filtered lists leave it out",
			"https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html",
			"read-after-write consistent",
			"consistency.go: Rules.ConsistencyWindow (300ms by default, TESTBED_CONSISTENCY_WINDOW) after CreateSnapshots, CreateSnapshot, CreateImage (the image and its snapshots), CreateVolume, RunInstances, CopySnapshot, CopyImage, RegisterImage",
			true, []string{"TestCheckpointUnderEventualConsistency", "TestVolumeRestoreThroughTheRulesOfEC2"}},
		{"busy detach",
			"DetachVolume of a volume still in use is accepted and stays busy until it is unmounted, force-detached or the instance reboots",
			"https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DetachVolume.html",
			"detaches at once",
			"busy.go: a data-plane volume mounted in any mount namespace (itself or a partition) or held (device-mapper, md) stays busy; DescribeVolumes settles it once nothing uses it; a root replacement (the reboot) settles it",
			true, []string{"TestVolumeRestoreThroughTheRulesOfEC2", "TestVolumeRestoreRefusesWhatItCannotRelease"}},
		{"attachment point in use",
			"AttachVolume at a device name another volume holds answers InvalidParameterValue: Attachment point /dev/sdf is already in use",
			"https://github.com/kubernetes/kubernetes/issues/31891",
			"replaces the old mapping silently",
			"busy.go attachPoint, from moto's block device mappings (busy detaches included)",
			true, []string{"TestVolumeRestoreThroughTheRulesOfEC2"}},
		{"device name held by the guest",
			"a volume attached at a name the guest's driver still holds (after a force detach, or a detach while in use) stays attaching until the instance reboots",
			"https://repost.aws/knowledge-center/ebs-stuck-attaching",
			"attaches at once",
			"Instance.HoldDeviceName, and automatically after a force detach of a volume in use: no block device appears, the attachment stays attaching",
			false, []string{"TestVolumeRestoreThroughTheRulesOfEC2"}},
		{"asynchronous block devices",
			"a volume is attaching until the guest sees it; udev makes its /dev/disk/by-id link some time later, and a detached volume's link can linger (stale)",
			"https://github.com/kubernetes-sigs/aws-ebs-csi-driver/issues/1224",
			"no guest",
			"udev.go: the link appears Rules.UdevDelay (200ms) after AttachVolume and goes that long after a detach; the link name follows udev's 60-persistent-storage.rules (model and serial), not the agent's function",
			true, []string{"TestVolumeRestoreThroughTheRulesOfEC2", "TestRestoreDataVolume"}},
		{"pending snapshots per volume",
			"at most 5 pending snapshots per volume (1 for st1/sc1), counting an AMI's, other tools' (AWS Backup, DLM) and those deleted while pending; beyond: ConcurrentSnapshotLimitExceeded",
			"https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html",
			"no limit; every snapshot completed at once",
			"limits.go checkPendingLimit over the held (pending) snapshots; Bed.ForeignSnapshots makes other tools' pending snapshots",
			true, []string{"TestRoomCheckCountsEveryPendingSnapshot"}},
		{"snapshots and AMIs take hours",
			"a snapshot stays pending while its blocks are copied, several hours for a first snapshot of a large volume; an AMI can take up to 24 hours",
			"https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html",
			"completed and available at once",
			"hold.go: Bed.HoldSnapshots, Bed.HoldImages keep them pending with a growing progress",
			false, []string{"TestSnapshotPendingForHoursEndsNeedsOperator", "TestDeployCheckpointIsTakenButNotWaitedFor"}},
		{"tag limits",
			"50 tags per resource (aws: tags not counted), keys of 128 and values of 256 Unicode characters",
			"https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions",
			"counts tags (TagLimitExceeded), takes values of any length",
			"limits.go checkTagsAndText on CreateTags and every TagSpecification",
			true, []string{"TestLongRevisionsAndManyTags"}},
		{"descriptions",
			"descriptions of snapshots and images are at most 255 characters",
			"https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html",
			"any length",
			"limits.go checkTagsAndText",
			true, []string{"TestLongRevisionsAndManyTags"}},
		{"client tokens",
			"a repeated ClientToken returns the first result; with other parameters it answers IdempotentParameterMismatch",
			"https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html",
			"ignores ClientToken on CreateVolume and RunInstances (creates again)",
			"limits.go for CreateVolume and RunInstances; rootreplace.go for CreateReplaceRootVolumeTask",
			true, []string{"TestRestoreInstanceTwiceLaunchesTwice", "TestCrashMatrixVolumeRestore"}},
		{"root replacement refusals",
			"no instance store root, no bare metal instance (Mac: not from an AMI), no AWS Marketplace AMI, and an AMI's root at least as large as the current root",
			"https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/replace-root.html",
			"no root replacement at all (HTTP 500)",
			"rootrules.go; Bed.MarkMarketplace gives an image a Marketplace product code, inherited by images of instances launched from it",
			true, []string{"TestRootRestoreRefusesWhatEC2Refuses"}},
		{"root replacement task states",
			"a task is pending, then in-progress, and a failing one passes through failing (failing-detached) before failed (failed-detached); it takes minutes",
			"https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/replace-root.html",
			"no root replacement at all (HTTP 500)",
			"rootreplace.go: Bed.RootReplaceDelay pending, half of it in-progress, half of it failing; Bed.FailNextRootReplace",
			true, []string{"TestRootRestoreFinishesFromTheIntentAfterTheReboot", "TestLadderRootRungRollsBackAcrossTheReboot"}},
		{"S3 403 for a missing key",
			"GetObject or HeadObject of a missing key answers 403 Access Denied, not 404, to a caller without s3:ListBucket",
			"https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html",
			"404 (no policy evaluated)",
			"s3rules.go: Bed.S3WithoutListBucket",
			false, []string{"TestChannelUnderS3Refusals"}},
		{"S3 bucket in another region",
			"a request signed for another region than the bucket's answers 301 PermanentRedirect with x-amz-bucket-region; aws-sdk-go-v2 does not follow it",
			"https://github.com/aws/aws-sdk-go/issues/356",
			"one region, answers every request",
			"s3rules.go: Bed.S3BucketInRegion",
			false, []string{"TestChannelUnderS3Refusals"}},
	}
}
