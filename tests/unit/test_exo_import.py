"""`tlsprobe import-exo`: Exchange Online exports as PowerShell and Microsoft365DSC write them.

Every export is written here, in the shapes the tools produce: `ConvertTo-Json` with a UTF-8 or
UTF-16 BOM, enums as numbers, one object where a list had one element, a single string where a
multi-valued property had one value; `Export-Csv` with Windows PowerShell 5's `#TYPE` line and
joined values; a Microsoft365DSC `.ps1` with credentials, comments and `Ensure = "Absent"`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tlsprobe.cli.main import main
from tlsprobe.exporter.config import ConfigError, load_config
from tlsprobe.exporter.exchange import exports, tenantfile
from tlsprobe.exporter.exchange.errors import ExportError
from tlsprobe.model import OutboundRule, TlsSettings

ACCEPTED = [
    {"DomainName": "contoso.test", "DomainType": 0, "Default": True},
    {"DomainName": "Fabrikam.TEST", "DomainType": "InternalRelay", "Default": False},
]
INBOUND = {  # one connector: ConvertTo-Json writes the object, not a list
    "Name": "From contoso relay",
    "Enabled": True,
    "ConnectorType": 1,  # TenantConnectorType.OnPremises
    "TlsSenderCertificateName": "*.contoso.test",
    "RestrictDomainsToCertificate": True,
    "RequireTls": True,
    "SenderDomains": "smtp:*;1",
    "SenderIPAddresses": None,
    "WhenCreated": "/Date(1767225600000)/",
    "Identity": {"Name": "From contoso relay", "ObjectGuid": "x"},
}
OUTBOUND_CSV = (
    "#TYPE Selected.Microsoft.Exchange.Data.Directory.SystemConfiguration.OutboundConnector\n"
    '"Name","Enabled","ConnectorType","UseMXRecord","SmartHosts","RecipientDomains",'
    '"TlsSettings","TlsDomain","IsTransportRuleScoped","Comment"\n'
    '"To contoso on-prem","True","OnPremises","False","relay.contoso.test,relay2.contoso.test",'
    '"contoso.test","DomainValidation","*.contoso.test","False","typed, by hand"\n'
    '"To partner","True","Partner","True","","fabrikam.test","EncryptionOnly","","False",""\n'
    '"Old route","False","OnPremises","False","old.contoso.test","contoso.test",'
    '"CertificateValidation","","False",""\n'
)
DSC = """\
# Generated with Microsoft365DSC version 1.25.101.1
param (
)

Configuration M365TenantConfig
{
    param (
    )

    $OrganizationName = $ConfigurationData.NonNodeData.OrganizationName

    Import-DscResource -ModuleName 'Microsoft365DSC' -ModuleVersion '1.25.101.1'

    Node localhost
    {
        EXOAcceptedDomain "EXOAcceptedDomain-contoso.test"
        {
            ApplicationId         = $ConfigurationData.NonNodeData.ApplicationId;
            CertificateThumbprint = $ConfigurationData.NonNodeData.CertificateThumbprint;
            DomainType            = "Authoritative";
            Ensure                = "Present";
            Identity              = "contoso.test";
            MatchSubDomains       = $False;
            OutboundOnly          = $False;
            TenantId              = $OrganizationName;
        }
        EXOAcceptedDomain "EXOAcceptedDomain-old.test"
        {
            DomainType           = "Authoritative";
            Ensure               = "Absent";
            Identity             = "old.test";
        }
        EXOInboundConnector "EXOInboundConnector-From contoso relay"
        {
            Comment                      = "Relay ""one"" `n <# not a comment #>";
            ConnectorType                = "OnPremises";
            Enabled                      = $True;
            Ensure                       = "Present";
            Identity                     = "From contoso relay";
            RequireTls                   = $True;
            RestrictDomainsToCertificate = $True;
            SenderDomains                = @("smtp:*;1");
            TlsSenderCertificateName     = "*.contoso.test";
            Credential                   = $Credscredential;
        }
        EXOOutboundConnector "EXOOutboundConnector-To contoso on-prem"
        {
            ConnectorType         = "OnPremises"
            Enabled               = $True
            Ensure                = "Present"
            Identity              = "To contoso on-prem"
            IsTransportRuleScoped = $False
            RecipientDomains      = @(
                "contoso.test"
            )
            SmartHosts            = @("relay.contoso.test","relay2.contoso.test")
            TlsDomain             = "*.contoso.test"
            TlsSettings           = "DomainValidation"
            UseMXRecord           = $False
        }
    }
}

M365TenantConfig -ConfigurationData .\\ConfigurationData.psd1
"""


def write_json(path: Path, data: object, encoding: str = "utf-8-sig") -> Path:
    path.write_text(json.dumps(data, indent=2), encoding=encoding)
    return path


@pytest.fixture
def export_files(tmp_path: Path) -> list[Path]:
    """A tenant's three exports: JSON with a UTF-8 BOM, JSON in UTF-16 (Out-File), CSV."""
    accepted = write_json(tmp_path / "accepted.json", ACCEPTED)
    inbound = write_json(tmp_path / "inbound.json", INBOUND, encoding="utf-16")
    outbound = tmp_path / "outbound.csv"
    outbound.write_text(OUTBOUND_CSV, encoding="utf-8-sig")
    return [accepted, inbound, outbound]


EXPECTED_BLOCK = {
    "accepted_domains": ["contoso.test", "fabrikam.test"],
    "certificate_domain": "*.contoso.test",
    "inbound_connector": "From contoso relay",
    "outbound_connectors": [
        {
            "name": "To contoso on-prem",
            "tls_settings": "DomainValidation",
            "tls_domain": "*.contoso.test",
            "smart_hosts": ["relay.contoso.test", "relay2.contoso.test"],
            "recipient_domains": ["contoso.test"],
        }
    ],
    "targets": [{"host": "relay.contoso.test"}, {"host": "relay2.contoso.test"}],
}


def test_powershell_json_and_csv_become_the_tenant_block(export_files: list[Path]) -> None:
    export = exports.read_exports(export_files)
    assert [d.domain_type for d in export.accepted] == ["Authoritative", "InternalRelay"]
    (inbound,) = export.inbound
    assert inbound.connector_type == "OnPremises"  # 2, an enum as a number
    assert inbound.sender_domains == ("*",)  # "smtp:*;1", one value instead of a list
    plan = tenantfile.plan(export)
    assert plan.block == EXPECTED_BLOCK
    assert plan.notes == [
        "outbound connector 'To partner': Partner connector, reported, not imported as a rule",
        "outbound connector 'Old route': disabled, not imported as a rule",
    ]


def test_microsoft365dsc_configuration_gives_the_same_block(tmp_path: Path) -> None:
    path = tmp_path / "M365TenantConfig.ps1"
    path.write_text(DSC, encoding="utf-8-sig")
    export = exports.read_exports([path])
    assert export.absent == ["EXOAcceptedDomain block 2"]
    plan = tenantfile.plan(export)
    assert plan.block == {**EXPECTED_BLOCK, "accepted_domains": ["contoso.test"]}
    assert plan.notes == ['EXOAcceptedDomain block 2: Ensure = "Absent", not imported']


def test_objects_for_typed_values_and_numbers_for_tls_settings(tmp_path: Path) -> None:
    """Without Select-Object's string conversion, ConvertTo-Json writes SmtpDomain and SmartHost
    objects; Windows PowerShell 5 writes TlsSettings as its number."""
    data = [
        {
            "Name": "To contoso",
            "ConnectorType": "OnPremises",
            "Enabled": True,
            "UseMXRecord": False,
            "SmartHosts": [{"Address": "relay.contoso.test", "IsIPAddress": False}],
            "RecipientDomains": ["contoso.test"],
            "TlsSettings": 4,
            "TlsDomain": None,
        }
    ]
    export = exports.read_exports([write_json(tmp_path / "o.json", data)])
    (connector,) = export.outbound
    assert connector.smart_hosts == ("relay.contoso.test",)
    assert connector.tls_settings is TlsSettings.DOMAIN_VALIDATION
    accepted = [{"DomainName": {"Domain": "Contoso.test", "IncludeSubDomains": False}}]
    path = write_json(tmp_path / "a.json", [{**accepted[0], "DomainType": "Authoritative"}])
    assert exports.read_exports([path]).accepted[0].name == "contoso.test"


def test_smart_hosts_as_convertto_json_writes_smarthost_objects(tmp_path: Path) -> None:
    """A SmartHost serializes as Address (an IPAddress, null for a host name), IsIPAddress and
    Domain (a Hostname: {HostnameString}, or its text past -Depth): every shape is a smart host,
    none is dropped without a word."""
    hosts = [
        {"Address": None, "IsIPAddress": False, "Domain": {"HostnameString": "relay.contoso.test"}},
        {"Address": None, "IsIPAddress": False, "Domain": "relay2.contoso.test"},
        {
            "Address": {"AddressFamily": 2, "Address": 16777343, "IPAddressToString": "127.0.0.1"},
            "IsIPAddress": True,
            "Domain": None,
        },
    ]
    wildcard = {"Address": "*.contoso.test", "IncludeSubDomains": True, "Domain": "contoso.test"}
    data = {
        "Name": "To contoso",
        "ConnectorType": "OnPremises",
        "SmartHosts": hosts,
        "RecipientDomains": [wildcard],
        "TlsSettings": "DomainValidation",
        "TlsDomain": wildcard,
    }
    (connector,) = exports.read_exports([write_json(tmp_path / "o.json", data)]).outbound
    assert connector.smart_hosts == ("relay.contoso.test", "relay2.contoso.test", "127.0.0.1")
    assert connector.recipient_domains == ("*.contoso.test",)
    assert connector.tls_domain == "*.contoso.test"


def test_connector_types_as_numbers_are_exchanges_numbers(tmp_path: Path) -> None:
    """ConvertTo-Json without -EnumsAsStrings writes TenantConnectorType as its number:
    OnPremises = 1, Partner = 2 (Microsoft.Exchange.Data.TenantConnectorType). An OnPremises
    connector is imported as the rule, a Partner one only reported, never the other way round."""
    inbound = [
        {"Name": "On-prem relay", "ConnectorType": 1, "TlsSenderCertificateName": "*.contoso.test"},
        {"Name": "Partner in", "ConnectorType": 2, "TlsSenderCertificateName": "mx.partner.test"},
    ]
    outbound = [
        {
            "Name": "To on-prem",
            "ConnectorType": 1,
            "SmartHosts": "relay.contoso.test",
            "TlsSettings": 4,
            "TlsDomain": "*.contoso.test",
        },
        {
            "Name": "To partner",
            "ConnectorType": 2,
            "SmartHosts": "mx.partner.test",
            "TlsSettings": 1,
        },
    ]
    export = exports.read_exports(
        [write_json(tmp_path / "i.json", inbound), write_json(tmp_path / "o.json", outbound)]
    )
    assert [c.connector_type for c in export.inbound] == ["OnPremises", "Partner"]
    assert [c.connector_type for c in export.outbound] == ["OnPremises", "Partner"]
    plan = tenantfile.plan(export)
    assert plan.block["inbound_connector"] == "On-prem relay"
    assert plan.block["certificate_domain"] == "*.contoso.test"
    assert [o["name"] for o in plan.block["outbound_connectors"]] == ["To on-prem"]
    assert plan.block["targets"] == [{"host": "relay.contoso.test"}]
    assert any("'Partner in': Partner connector" in n for n in plan.notes)
    assert any("'To partner': Partner connector" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "missing.json",
            [{"Name": "x", "TlsSenderCertificateName": "*.contoso.test"}],
            "missing.json: record 1: ConnectorType: missing",
        ),
        (
            "bad.json",
            [
                {"DomainName": "a.test", "DomainType": 0},
                {"DomainName": "sec ret!", "DomainType": 0},
            ],
            "bad.json: record 2: DomainName: not a valid domain name",
        ),
        (
            "enum.json",
            {"Name": "x", "ConnectorType": 7, "SmartHosts": "sec-ret.test"},
            "enum.json: record 1: ConnectorType: must be one of OnPremises, Partner",
        ),
        (
            "pattern.json",
            {"Name": "x", "ConnectorType": 1, "TlsSenderCertificateName": "a.*.secret.test"},
            "pattern.json: record 1: TlsSenderCertificateName: not a valid name or *.domain",
        ),
        (
            "unknown.json",
            [{"Secret": "s3cr3t"}],
            "unknown.json: record 1: none of the properties tlsprobe reads",
        ),
    ],
)
def test_a_bad_record_names_file_record_and_property_never_the_value(
    tmp_path: Path, name: str, content: object, expected: str
) -> None:
    with pytest.raises(ExportError) as caught:
        exports.read_exports([write_json(tmp_path / name, content)])
    message = str(caught.value)
    assert message.startswith(str(tmp_path / expected)), message
    assert "secret" not in message.lower() and "s3cr3t" not in message
    assert "sec ret" not in message and "sec-ret" not in message


def test_windows_powershell_csv_of_a_list_says_to_join_it(tmp_path: Path) -> None:
    path = tmp_path / "outbound.csv"
    path.write_text(
        OUTBOUND_CSV.replace(
            '"relay.contoso.test,relay2.contoso.test"',
            '"System.Collections.Generic.List`1[Microsoft.Exchange.Data.SmartHost]"',
        )
    )
    with pytest.raises(ExportError) as caught:
        exports.read_exports([path])
    assert str(caught.value).startswith(f"{path}: record 1: SmartHosts: holds a .NET type name")


def test_a_dsc_resource_quoted_in_a_value_is_text_not_a_block(tmp_path: Path) -> None:
    """A Comment that quotes a resource (an admin's note of the connector it replaced) is the
    Comment's text: no phantom connector, no target for its smart host."""
    path = tmp_path / "M365TenantConfig.ps1"
    path.write_text(
        "Configuration M365TenantConfig\n{\n    Node localhost\n    {\n"
        '        EXOOutboundConnector "EXOOutboundConnector-To on-prem"\n        {\n'
        "            Comment       = \"was: EXOOutboundConnector 'Old' { Identity = 'Old route'; "
        "ConnectorType = 'OnPremises'; SmartHosts = @('old.contoso.test'); "
        "TlsSettings = 'EncryptionOnly' }\";\n"
        '            ConnectorType = "OnPremises";\n'
        '            Identity      = "To on-prem";\n'
        '            SmartHosts    = @("onprem.contoso.test");\n'
        '            TlsSettings   = "DomainValidation";\n'
        "        }\n"
        '        EXOAcceptedDomain "EXOAcceptedDomain-contoso.test"\n        {\n'
        '            DomainType = "Authoritative";\n            Identity = "contoso.test";\n'
        "        }\n    }\n}\n"
    )
    export = exports.read_exports([path])
    assert [o.name for o in export.outbound] == ["To on-prem"]
    assert [a.name for a in export.accepted] == ["contoso.test"]  # the block after it still is
    assert tenantfile.plan(export).block["targets"] == [{"host": "onprem.contoso.test"}]


def test_dsc_block_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.ps1"
    path.write_text('EXOOutboundConnector "x"\n{\n  Identity = "x"\n  TlsSettings = Get-It\n')
    with pytest.raises(ExportError) as caught:
        exports.read_exports([path])
    assert str(caught.value) == (
        f"{path}: EXOOutboundConnector block 1: TlsSettings: a value tlsprobe cannot read"
    )


def test_reads_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="not a regular file"):
        exports.read_exports([fifo])  # and does not wait for a writer
    with pytest.raises(ExportError, match="not a regular file"):
        exports.read_exports([tmp_path])
    big = write_json(tmp_path / "big.json", ACCEPTED)
    with pytest.raises(ExportError, match="larger than"):
        exports.read_text(big, max_bytes=64)
    monkeypatch.setattr(exports, "MAX_RECORDS", 1)
    with pytest.raises(ExportError, match="more than 1 records"):
        exports.read_exports([big])
    monkeypatch.setattr(exports, "MAX_ITEMS", 1)
    with pytest.raises(ExportError, match="SmartHosts: more than 1 values"):
        exports.read_exports([_csv(tmp_path)])


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "one.csv"
    lines = OUTBOUND_CSV.splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")
    return path


# --- the command ---------------------------------------------------------------------------


MAIN = """\
# My exporter.  Comments like this one must survive every import.
defaults:
  interval: 5m   # keep
tenants:
  contoso:
    exchange_online: exo/contoso.yml
    targets:
      - {name: relay, host: relay.contoso.test}
"""


def run(*argv: str | Path) -> int:
    return main(["import-exo", *map(str, argv)])


def test_dry_run_prints_the_block_and_fails_on_drift_then_write_keeps_the_main_file(
    tmp_path: Path, export_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tlsprobe.yml"
    config.write_text(MAIN)
    args: tuple[str | Path, ...] = ("--tenant", "contoso", "--config", config, *export_files)
    assert run(*args) == 1  # no tenant file yet: everything is drift
    out, err = capsys.readouterr()
    assert "accepted_domains:\n- contoso.test\n- fabrikam.test\n" in out
    assert "drift: tenants.contoso: accepted domain added: 'fabrikam.test'" in err
    assert not (tmp_path / "exo").exists()  # a dry run writes nothing

    assert run(*args, "--write") == 0
    assert config.read_text() == MAIN  # the user's file, comments and all, untouched
    loaded = load_config(config)
    relay, relay2 = loaded.targets  # the typed relay target wins over the imported one
    assert (relay.name, relay2.name) == ("relay", "relay2.contoso.test")
    rule = OutboundRule("To contoso on-prem", TlsSettings.DOMAIN_VALIDATION, "*.contoso.test")
    assert relay.policy.outbound == rule and relay2.policy.outbound == rule
    assert relay.policy.hostname_required  # an outbound connector's smart host
    assert loaded.tenants[0].inbound_connector == "From contoso relay"
    capsys.readouterr()
    assert run(*args) == 0  # in step with the tenant
    assert "matches the tenant's exports" in capsys.readouterr().err

    drifted = tmp_path / "accepted2.json"
    write_json(drifted, ACCEPTED[:1])
    assert run("--tenant", "contoso", "--config", config, drifted, *export_files[1:]) == 1
    err = capsys.readouterr().err
    assert "drift: tenants.contoso: accepted domain removed: 'fabrikam.test'" in err


def test_hand_typed_tenant_drift_is_named(
    tmp_path: Path, export_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tlsprobe.yml"
    config.write_text(
        "tenants:\n  contoso:\n    accepted_domains: [contoso.test, gone.test]\n"
        "    certificate_domain: relay.contoso.test\n    targets: [{host: relay.contoso.test}]\n"
    )
    assert run("--tenant", "contoso", "--config", config, *export_files) == 1
    err = capsys.readouterr().err
    assert "accepted domain removed: 'gone.test'" in err
    assert (
        "connector certificate domain (TlsSenderCertificateName) changed: "
        "'relay.contoso.test' -> '*.contoso.test'"
    ) in err
    assert run("--tenant", "contoso", "--config", config, "--write", *export_files) == 0
    assert "add to" in capsys.readouterr().out  # the main file is the user's to edit


def test_write_without_a_configuration_starts_a_working_one(
    tmp_path: Path, export_files: list[Path]
) -> None:
    config = tmp_path / "new" / "tlsprobe.yml"
    assert run("--tenant", "contoso", "--config", config, "--write", *export_files) == 0
    loaded = load_config(config)
    assert [t.host for t in loaded.targets] == ["relay.contoso.test", "relay2.contoso.test"]
    assert loaded.tenants[0].accepted_domains == ("contoso.test", "fabrikam.test")


def test_an_unusable_export_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run("--tenant", "t", "--config", tmp_path / "c.yml", bad) == 2
    assert capsys.readouterr().err == f"tlsprobe import-exo: {bad}: not JSON (line 1, column 2)\n"


def test_a_key_in_both_the_tenant_and_its_tenant_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.yml").write_text("accepted_domains: [contoso.test]\n")
    config = tmp_path / "c.yml"
    config.write_text(
        "tenants:\n  contoso:\n    exchange_online: t.yml\n    accepted_domains: [x.test]\n"
        "    targets: [{host: relay.contoso.test}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value).startswith("tenants.contoso.accepted_domains: set here and in")


def test_a_tenant_name_that_is_no_file_name_is_refused(
    tmp_path: Path, export_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yml"
    assert run("--tenant", "../../etc/x", "--config", config, "--write", *export_files) == 2
    assert "--tenant: must be 1-100 letters" in capsys.readouterr().err
    assert not (tmp_path.parent / "etc").exists() and not config.exists()


def test_a_tenant_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "t.yml")
    config = tmp_path / "c.yml"
    config.write_text("tenants:\n  contoso:\n    exchange_online: t.yml\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)  # and does not wait for a writer
    assert str(caught.value) == (
        f"tenants.contoso.exchange_online: {tmp_path / 't.yml'} is not a regular file"
    )


def test_validate_config_compares_with_the_exports_for_ci(
    tmp_path: Path, export_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tlsprobe.yml"
    config.write_text(MAIN)
    assert run("--tenant", "contoso", "--config", config, "--write", *export_files) == 0
    capsys.readouterr()
    assert main(["validate-config", str(config), "--exo", *map(str, export_files)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{config}: OK (2 targets in 1 tenants)")
    assert "matches the tenant's exports" in err and "accepted_domains:" not in out
    drifted = write_json(tmp_path / "accepted2.json", ACCEPTED[:1])
    argv = ["validate-config", str(config), "--tenant", "contoso", "--exo", str(drifted)]
    assert main([*argv, *map(str, export_files[1:])]) == 1
    assert "accepted domain removed: 'fabrikam.test'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["validate-config", str(config), "--exo", str(bad)]) == 2
    # the command the CI step ran, not import-exo
    assert f"tlsprobe validate-config: {bad}: not JSON" in capsys.readouterr().err


def test_a_name_that_merely_starts_like_a_namespace_is_a_name(tmp_path: Path) -> None:
    data = {
        "Name": "Microsoft.Relay",
        "ConnectorType": "OnPremises",
        "SmartHosts": "r.contoso.test",
    }
    export = exports.read_exports([write_json(tmp_path / "o.json", data)])
    assert export.outbound[0].name == "Microsoft.Relay"


@pytest.mark.parametrize("what", ["main file", "own file", "link", "missing main file"])
def test_write_never_replaces_a_file_it_did_not_write(
    tmp_path: Path, export_files: list[Path], capsys: pytest.CaptureFixture[str], what: str
) -> None:
    """--tenant-file naming the main configuration, a file of the user's, or a link is
    refused (exit 2, nothing written): `--write` replaces only a tenant file it wrote itself."""
    config = tmp_path / "tlsprobe.yml"
    main_text = MAIN.replace("    exchange_online: exo/contoso.yml\n", "")  # --tenant-file counts
    assert main_text != MAIN
    config.write_text(main_text)
    precious = tmp_path / "notes.yml"
    precious.write_text("# mine\nkeep: me\n")
    tenant_file: Path = {"main file": config, "own file": precious}.get(what, tmp_path / "l.yml")
    if what == "link":
        tenant_file.symlink_to(precious)
    if what == "missing main file":
        config.unlink()
        tenant_file = config
    argv = ("--tenant", "contoso", "--config", config, "--tenant-file", tenant_file)
    assert run(*argv, "--write", *export_files) == 2
    err = capsys.readouterr().err
    assert f"tenant file {tenant_file} " in err
    assert precious.read_text() == "# mine\nkeep: me\n"
    if what == "missing main file":
        assert not config.exists()
    else:
        assert config.read_text() == main_text
    if what == "link":
        assert tenant_file.is_symlink()
    # its own tenant file it rewrites: an import, then the same import again
    mine = tmp_path / "exo" / "mine.yml"
    argv = ("--tenant", "contoso", "--config", config, "--tenant-file", mine)
    assert run(*argv, "--write", *export_files) == 0
    assert run(*argv, "--write", *export_files) == 0
    assert mine.read_text().startswith("# Written by `tlsprobe import-exo`")


def test_a_huge_joined_value_is_not_split_whole(tmp_path: Path) -> None:
    """A multi-valued property as one comma-joined text of nearly 8 MiB (under the file bound):
    the values are taken one at a time up to the 1,000-value bound, never all split into a
    list first (which held 1.4 million strings: 93 MB at peak for the 8 MiB file)."""
    import tracemalloc

    joined = ",".join(f"h{i}" for i in range(1_400_000))[: exports.MAX_EXPORT_BYTES - 200]
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"Name": "x", "ConnectorType": "OnPremises", "SmartHosts": joined}))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(ExportError, match=r"record 1: SmartHosts: more than 1000 values"):
            exports.read_exports([path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * size  # the text and its JSON parse; 11 times the file before


def test_a_tenant_file_other_than_the_one_configured_is_refused(
    tmp_path: Path, export_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The main file names exo/contoso.yml: --tenant-file elsewhere.yml was ignored without a
    word (the import wrote exo/contoso.yml); now it is refused, naming both."""
    config = tmp_path / "tlsprobe.yml"
    config.write_text(MAIN)
    argv = ("--tenant", "contoso", "--config", config, "--tenant-file", "elsewhere.yml")
    assert run(*argv, "--write", *export_files) == 2
    err = capsys.readouterr().err
    assert "--tenant-file elsewhere.yml:" in err and "exchange_online: exo/contoso.yml" in err
    assert not (tmp_path / "exo").exists() and not (tmp_path / "elsewhere.yml").exists()
    same = ("--tenant", "contoso", "--config", config, "--tenant-file", "exo/contoso.yml")
    assert run(*same, "--write", *export_files) == 0  # the one it names is fine


def test_a_rewrite_keeps_the_tenant_files_mode(tmp_path: Path, export_files: list[Path]) -> None:
    """A tenant file the administrator made private (0600) stays so when the import rewrites
    it; a new one is 0644 like the configuration."""
    config = tmp_path / "tlsprobe.yml"
    config.write_text(MAIN)
    argv: tuple[str | Path, ...] = (
        "--tenant",
        "contoso",
        "--config",
        config,
        "--write",
        *export_files,
    )
    assert run(*argv) == 0
    tenant_file = tmp_path / "exo" / "contoso.yml"
    assert tenant_file.stat().st_mode & 0o777 == 0o644
    tenant_file.chmod(0o600)
    assert run(*argv) == 0
    assert tenant_file.stat().st_mode & 0o777 == 0o600
