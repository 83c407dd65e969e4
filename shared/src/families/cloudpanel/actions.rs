//! The `cloudpanel` family's typed actions: parsed from `(type, payload)`,
//! with their resource, re-run safety and configuration checks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::certificate::CertificateInstall;
use super::config::CloudpanelConfig;
use crate::families::family::{ActionError, ActionInfo, FamilyAction, payload};
use crate::names::{Domain, NameError, Port, check_name};

pub const FAMILY: &str = "cloudpanel";

pub(super) const CATALOGUE: &[ActionInfo] = &[
    ActionInfo {
        kind: "cloudpanel.site.add",
        summary: "Adds site {domain} of {site_type} php, nodejs, static, python or reverse-proxy with its site user (clpctl site:add:*); a no-op when the site's htdocs exists.",
    },
    ActionInfo {
        kind: "cloudpanel.site.delete",
        summary: "Deletes site {domain} (clpctl site:delete --force); a no-op when it is absent.",
    },
    ActionInfo {
        kind: "cloudpanel.certificate.install",
        summary: "Installs a TLS certificate on site {domain}: from Let's Encrypt (clpctl lets-encrypt:install:certificate) or the uploaded certificate and private key (clpctl site:install:certificate, the key in a 0600 file removed afterwards).",
    },
    ActionInfo {
        kind: "cloudpanel.db.add",
        summary: "Adds database {database_name} with its user to site {domain} (clpctl db:add).",
    },
    ActionInfo {
        kind: "cloudpanel.user.add",
        summary: "Adds panel user {user_name} (clpctl user:add); a no-op when clpctl user:list shows it.",
    },
    ActionInfo {
        kind: "cloudpanel.user.delete",
        summary: "Deletes panel user {user_name} (clpctl user:delete); a no-op when it is absent.",
    },
    ActionInfo {
        kind: "cloudpanel.list",
        summary: "Observes the sites (their htdocs directories) and the panel users (clpctl user:list).",
    },
];

crate::name_type!(
    /// The Linux user CloudPanel creates for a site.
    SiteUser, "site user", max = 32, extra = "_-"
);
crate::name_type!(
    /// A MySQL database name.
    DatabaseName, "database name", max = 64, extra = "_-"
);
crate::name_type!(
    /// A MySQL user name.
    DatabaseUser, "database user name", max = 32, extra = "_-"
);
crate::name_type!(
    /// A CloudPanel (panel) user name, such as `john.doe`.
    UserName, "user name", max = 64, extra = "._-"
);
crate::name_type!(
    /// An IANA time zone such as `UTC` or `Europe/Berlin`.
    Timezone, "timezone", max = 64, extra = "/_+-"
);

string_value!(
    /// A password: 8 to 128 printable ASCII characters, no spaces. Its
    /// `Debug` never shows it.
    Password
);

impl Password {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if !(8..=128).contains(&value.len()) {
            // The value itself is never repeated in an error.
            return Err(NameError::new(
                "password",
                "***",
                "must be 8 to 128 characters",
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(NameError::new(
                "password",
                "***",
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

string_value!(
    /// A runtime version such as `8.4`, `22` or `3.11`.
    Version
);

impl Version {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_name("version", value, 8, ".")?;
        if !value.chars().all(|c| c.is_ascii_digit() || c == '.') || value.ends_with('.') {
            return Err(NameError::new(
                "version",
                value,
                "must be digits and dots, like 8.4",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

string_value!(
    /// A vhost template's name, such as `Generic`, `WordPress` or
    /// `Laravel 11`: letters, digits, `._-` and single inner spaces.
    /// CloudPanel's own templates have spaces in their names, and a space
    /// is harmless here: the name reaches clpctl as part of one argument
    /// (`--vhostTemplate=Laravel 11`), never through a shell.
    VhostTemplate
);

impl VhostTemplate {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_name("vhost template", value, 64, " ._-")?;
        if value.ends_with(' ') || value.contains("  ") {
            return Err(NameError::new(
                "vhost template",
                value,
                "no trailing or double spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for VhostTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VhostTemplate({})", self.0)
    }
}

string_value!(
    /// Where a reverse-proxy site sends requests: `http://` or `https://`, a
    /// host (DNS name, IPv4 or `[IPv6]`), an optional port and path.
    ProxyUrl
);

impl ProxyUrl {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new("reverse proxy URL", value, reason);
        if value.len() > 512 {
            return Err(refuse("must be at most 512 bytes"));
        }
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| refuse("must start with http:// or https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| refuse("an IPv6 host must end with ']'"))?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| refuse("invalid IPv6 address"))?;
            (None, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (Some(host), Some(port)),
                None => (Some(authority), None),
            }
        };
        if let Some(host) = host
            && host.parse::<std::net::Ipv4Addr>().is_err()
            && Domain::parse(host).is_err()
        {
            return Err(refuse("the host must be a DNS name or an IP address"));
        }
        if let Some(port) = port {
            let number: u32 = port
                .parse()
                .map_err(|_| refuse("the port must be a number"))?;
            Port::parse(number).map_err(|_| refuse("the port must be 1 to 65535"))?;
        }
        let path_ok = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-~%".contains(c));
        if !path_ok || path.contains("..") {
            return Err(refuse(
                "the path may hold only letters, digits and /._-~% and no \"..\"",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({})", self.0)
    }
}

string_value!(
    /// An e-mail address: `local@domain`, a plain local part.
    Email
);

impl Email {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new("email", value, reason);
        let (local, domain) = value
            .split_once('@')
            .ok_or_else(|| refuse("must be local@domain"))?;
        check_name("email", local, 64, "._+-").map_err(|e| refuse(&e.reason))?;
        let domain = Domain::parse(domain).map_err(|e| refuse(&e.reason))?;
        if !domain.as_str().contains('.') {
            return Err(refuse("the domain needs a dot"));
        }
        Ok(Self(format!("{local}@{domain}")))
    }
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

string_value!(
    /// A first or last name: letters (any script), spaces, `'`, `-`, `.`.
    PersonName
);

impl PersonName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new("name", value, reason);
        if value.is_empty() || value.chars().count() > 64 {
            return Err(refuse("must be 1 to 64 characters"));
        }
        if !value.starts_with(char::is_alphabetic) {
            return Err(refuse("must start with a letter"));
        }
        if !value
            .chars()
            .all(|c| c.is_alphabetic() || " '-.".contains(c))
        {
            return Err(refuse("may hold only letters, spaces, ' - and ."));
        }
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for PersonName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PersonName({})", self.0)
    }
}

/// The kind of site, which picks the `site:add:<type>` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteType {
    Php,
    Nodejs,
    Static,
    Python,
    ReverseProxy,
}

impl SiteType {
    /// The clpctl command that adds a site of this type.
    pub fn command(self) -> &'static str {
        match self {
            SiteType::Php => "site:add:php",
            SiteType::Nodejs => "site:add:nodejs",
            SiteType::Static => "site:add:static",
            SiteType::Python => "site:add:python",
            SiteType::ReverseProxy => "site:add:reverse-proxy",
        }
    }
}

/// `cloudpanel.site.add`. Which optional fields a site needs depends on its
/// type (see [`SiteAdd::check`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteAdd {
    pub site_type: SiteType,
    pub domain: Domain,
    pub site_user: SiteUser,
    /// Secret field.
    pub site_user_password: Password,
    /// php: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php_version: Option<Version>,
    /// php: default `Generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_template: Option<VhostTemplate>,
    /// nodejs: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodejs_version: Option<Version>,
    /// python: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<Version>,
    /// nodejs and python: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_port: Option<Port>,
    /// reverse-proxy: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_proxy_url: Option<ProxyUrl>,
}

impl SiteAdd {
    pub const DEFAULT_VHOST_TEMPLATE: &'static str = "Generic";

    /// Every field its type needs is there, and no field it does not use.
    fn check(&self) -> Result<(), String> {
        let given = [
            ("php_version", self.php_version.is_some()),
            ("vhost_template", self.vhost_template.is_some()),
            ("nodejs_version", self.nodejs_version.is_some()),
            ("python_version", self.python_version.is_some()),
            ("app_port", self.app_port.is_some()),
            ("reverse_proxy_url", self.reverse_proxy_url.is_some()),
        ];
        let (required, allowed): (&[&str], &[&str]) = match self.site_type {
            SiteType::Php => (&["php_version"], &["php_version", "vhost_template"]),
            SiteType::Nodejs => (
                &["nodejs_version", "app_port"],
                &["nodejs_version", "app_port"],
            ),
            SiteType::Static => (&[], &[]),
            SiteType::Python => (
                &["python_version", "app_port"],
                &["python_version", "app_port"],
            ),
            SiteType::ReverseProxy => (&["reverse_proxy_url"], &["reverse_proxy_url"]),
        };
        for (field, present) in given {
            if required.contains(&field) && !present {
                return Err(format!("a {:?} site needs {field}", self.site_type));
            }
            if present && !allowed.contains(&field) {
                return Err(format!("a {:?} site takes no {field}", self.site_type));
            }
        }
        Ok(())
    }
}

/// `cloudpanel.site.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDelete {
    pub domain: Domain,
}

/// `cloudpanel.db.add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbAdd {
    pub domain: Domain,
    pub database_name: DatabaseName,
    pub database_user_name: DatabaseUser,
    /// Secret field.
    pub database_user_password: Password,
}

/// A panel user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    SiteManager,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::SiteManager => "site-manager",
            Role::User => "user",
        }
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

pub const MAX_USER_SITES: usize = 100;

/// `cloudpanel.user.add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAdd {
    pub user_name: UserName,
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
    /// Secret field.
    pub password: Password,
    pub role: Role,
    /// The sites a `site-manager` or `user` may manage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<Domain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Timezone>,
    /// Whether the user may log in (`--status=1`); default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
}

impl UserAdd {
    pub const DEFAULT_TIMEZONE: &'static str = "UTC";
}

/// `cloudpanel.user.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDelete {
    pub user_name: UserName,
}

/// `cloudpanel.list` takes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {}

#[derive(Debug, Clone, PartialEq)]
pub enum CloudpanelAction {
    SiteAdd(SiteAdd),
    SiteDelete(SiteDelete),
    CertificateInstall(CertificateInstall),
    DbAdd(DbAdd),
    UserAdd(UserAdd),
    UserDelete(UserDelete),
    List(List),
}

impl FamilyAction for CloudpanelAction {
    const FAMILY: &'static str = FAMILY;
    const CATALOGUE: &'static [ActionInfo] = CATALOGUE;
    type Section = CloudpanelConfig;

    fn parse(kind: &str, value: Value) -> Result<Self, ActionError> {
        match kind {
            "cloudpanel.site.add" => {
                let site: SiteAdd = payload(kind, value)?;
                site.check().map_err(|m| ActionError::invalid(kind, m))?;
                Ok(CloudpanelAction::SiteAdd(site))
            }
            "cloudpanel.site.delete" => Ok(CloudpanelAction::SiteDelete(payload(kind, value)?)),
            "cloudpanel.certificate.install" => {
                let install: CertificateInstall = payload(kind, value)?;
                install.check().map_err(|m| ActionError::invalid(kind, m))?;
                Ok(CloudpanelAction::CertificateInstall(install))
            }
            "cloudpanel.db.add" => Ok(CloudpanelAction::DbAdd(payload(kind, value)?)),
            "cloudpanel.user.add" => {
                let user: UserAdd = payload(kind, value)?;
                if user.role == Role::Admin && !user.sites.is_empty() {
                    return Err(ActionError::invalid(
                        kind,
                        "an admin manages every site: give sites only to site-manager or user",
                    ));
                }
                if user.sites.len() > MAX_USER_SITES {
                    return Err(ActionError::invalid(
                        kind,
                        format!("at most {MAX_USER_SITES} sites"),
                    ));
                }
                Ok(CloudpanelAction::UserAdd(user))
            }
            "cloudpanel.user.delete" => Ok(CloudpanelAction::UserDelete(payload(kind, value)?)),
            "cloudpanel.list" => {
                let value = if value.is_null() {
                    Value::Object(Default::default())
                } else {
                    value
                };
                Ok(CloudpanelAction::List(payload(kind, value)?))
            }
            _ => Err(ActionError::UnknownType(kind.to_owned())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            CloudpanelAction::SiteAdd(_) => "cloudpanel.site.add",
            CloudpanelAction::SiteDelete(_) => "cloudpanel.site.delete",
            CloudpanelAction::CertificateInstall(_) => "cloudpanel.certificate.install",
            CloudpanelAction::DbAdd(_) => "cloudpanel.db.add",
            CloudpanelAction::UserAdd(_) => "cloudpanel.user.add",
            CloudpanelAction::UserDelete(_) => "cloudpanel.user.delete",
            CloudpanelAction::List(_) => "cloudpanel.list",
        }
    }

    fn payload(&self) -> Value {
        let value = match self {
            CloudpanelAction::SiteAdd(a) => serde_json::to_value(a),
            CloudpanelAction::SiteDelete(a) => serde_json::to_value(a),
            CloudpanelAction::CertificateInstall(a) => serde_json::to_value(a),
            CloudpanelAction::DbAdd(a) => serde_json::to_value(a),
            CloudpanelAction::UserAdd(a) => serde_json::to_value(a),
            CloudpanelAction::UserDelete(a) => serde_json::to_value(a),
            CloudpanelAction::List(a) => serde_json::to_value(a),
        };
        value.expect("cloudpanel payloads always serialize")
    }

    fn resource(&self) -> Option<String> {
        Some(match self {
            CloudpanelAction::SiteAdd(a) => format!("cloudpanel:site:{}", a.domain),
            CloudpanelAction::SiteDelete(a) => format!("cloudpanel:site:{}", a.domain),
            CloudpanelAction::CertificateInstall(a) => format!("cloudpanel:site:{}", a.domain),
            CloudpanelAction::DbAdd(a) => format!("cloudpanel:site:{}", a.domain),
            CloudpanelAction::UserAdd(a) => format!("cloudpanel:user:{}", a.user_name),
            CloudpanelAction::UserDelete(a) => format!("cloudpanel:user:{}", a.user_name),
            CloudpanelAction::List(_) => "cloudpanel:list".to_owned(),
        })
    }

    fn rerun_safe(&self) -> bool {
        !matches!(self, CloudpanelAction::DbAdd(_))
    }

    fn default_timeout_secs(&self) -> i64 {
        900
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        match self {
            CloudpanelAction::SiteAdd(_) => &["site_user_password"],
            CloudpanelAction::DbAdd(_) => &["database_user_password"],
            CloudpanelAction::UserAdd(_) => &["password"],
            CloudpanelAction::CertificateInstall(_) => &["private_key"],
            CloudpanelAction::SiteDelete(_)
            | CloudpanelAction::UserDelete(_)
            | CloudpanelAction::List(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;
    use serde_json::json;

    fn php_site() -> Value {
        json!({"site_type": "php", "domain": "www.example.com", "site_user": "john-doe",
               "site_user_password": "!secretPassword!", "php_version": "8.4"})
    }

    #[test]
    fn a_site_parses_with_its_password_as_a_secret_field() {
        let action = Action::parse("cloudpanel.site.add", php_site()).unwrap();
        assert_eq!(
            action.resource().as_deref(),
            Some("cloudpanel:site:www.example.com")
        );
        assert_eq!(action.secret_fields(), ["site_user_password"]);
        assert!(action.rerun_safe());
        assert_eq!(
            Action::parse(action.kind(), action.payload()).unwrap(),
            action
        );
        assert!(!format!("{action:?}").contains("secretPassword"));
        let mut config = crate::Config::default();
        assert!(
            action.check_config(&config).is_err(),
            "cloudpanel is off by default"
        );
        config.cloudpanel.enabled = true;
        assert!(action.check_config(&config).is_ok());
        let db = Action::parse(
            "cloudpanel.db.add",
            json!({"domain": "www.example.com", "database_name": "my-database",
                   "database_user_name": "john", "database_user_password": "!secret!9"}),
        )
        .unwrap();
        assert_eq!(db.resource(), action.resource());
        assert!(!db.rerun_safe());
    }

    /// Characters and shapes no name clpctl is given may hold.
    const RISKY: &[&str] = &[
        "", "-x", "--all", "a;b", "a|b", "a&b", "$(id)", "a`id`", "a'b", "a\"b", "a>b", "a*",
        "a\nb", "a\rb", "a\tb", "a\0b", "..", "a..b", "../x", "a/b", "ä",
    ];

    fn db(field: &str, value: &str) -> Result<Action, ActionError> {
        let mut payload = json!({"domain": "www.example.com", "database_name": "shop_db",
            "database_user_name": "shop-user", "database_user_password": "!secret!9"});
        payload[field] = json!(value);
        Action::parse("cloudpanel.db.add", payload)
    }

    #[test]
    fn database_names_and_users_clpctl_would_misread_are_refused() {
        for (field, max) in [("database_name", 64), ("database_user_name", 32)] {
            for good in ["shop_db", "shop-db-2", "A1", &"d".repeat(max)] {
                assert!(db(field, good).is_ok(), "{field} {good:?} was refused");
            }
            let too_long = "d".repeat(max + 1);
            for bad in RISKY.iter().copied().chain(["a b", too_long.as_str()]) {
                assert!(db(field, bad).is_err(), "{field} {bad:?} was accepted");
            }
        }
    }

    #[test]
    fn vhost_templates_keep_their_spaces_and_refuse_everything_else_risky() {
        let php = |template: &str| {
            let mut payload = php_site();
            payload["vhost_template"] = json!(template);
            Action::parse("cloudpanel.site.add", payload)
        };
        for good in [
            "Generic",
            "WordPress",
            "Laravel 11",
            "Magento 2.4",
            "TYPO3_12-lts",
        ] {
            let action = php(good).unwrap();
            assert_eq!(action.payload()["vhost_template"], good, "kept as given");
        }
        let too_long = "T".repeat(65);
        let spaced = [" Generic", "Generic ", "Laravel  11"];
        for bad in RISKY
            .iter()
            .copied()
            .chain(spaced)
            .chain([too_long.as_str()])
        {
            assert!(php(bad).is_err(), "vhost template {bad:?} was accepted");
        }
    }

    #[test]
    fn each_site_type_needs_its_own_fields_and_no_others() {
        let ok = [
            json!({"site_type": "nodejs", "nodejs_version": "22", "app_port": 3000}),
            json!({"site_type": "static"}),
            json!({"site_type": "python", "python_version": "3.11", "app_port": 8080}),
            json!({"site_type": "reverse-proxy", "reverse_proxy_url": "http://127.0.0.1:8000"}),
            json!({"site_type": "php", "php_version": "8.4", "vhost_template": "Laravel 11"}),
        ];
        let bad = [
            json!({"site_type": "php"}),
            json!({"site_type": "nodejs", "nodejs_version": "22"}),
            json!({"site_type": "static", "app_port": 80}),
            json!({"site_type": "reverse-proxy"}),
            json!({"site_type": "reverse-proxy", "reverse_proxy_url": "ftp://x"}),
            json!({"site_type": "reverse-proxy", "reverse_proxy_url": "http://a b"}),
            json!({"site_type": "reverse-proxy", "reverse_proxy_url": "http://x:99999"}),
            json!({"site_type": "reverse-proxy", "reverse_proxy_url": "http://x/$(id)"}),
            json!({"site_type": "php", "php_version": "8.4;id"}),
            json!({"site_type": "php", "php_version": "8.4", "vhost_template": "-x"}),
            json!({"site_type": "perl"}),
        ];
        let base = |extra: &Value| {
            let mut payload = php_site();
            let object = payload.as_object_mut().unwrap();
            object.remove("php_version");
            for (k, v) in extra.as_object().unwrap() {
                object.insert(k.clone(), v.clone());
            }
            payload
        };
        for extra in ok {
            let payload = base(&extra);
            assert!(
                Action::parse("cloudpanel.site.add", payload.clone()).is_ok(),
                "{payload} was refused"
            );
        }
        for extra in bad {
            let payload = base(&extra);
            assert!(
                Action::parse("cloudpanel.site.add", payload.clone()).is_err(),
                "{payload} was accepted"
            );
        }
    }

    #[test]
    fn names_and_passwords_clpctl_would_misread_are_refused() {
        let with = |field: &str, value: Value| {
            let mut payload = php_site();
            payload[field] = value;
            Action::parse("cloudpanel.site.add", payload)
        };
        for domain in [
            "-x.com", "a;b.com", "../x", "a b.com", "x\n.com", "x\0.com", "",
        ] {
            assert!(with("domain", json!(domain)).is_err(), "domain {domain:?}");
        }
        for user in ["-u", "a;b", "a b", "a\nb", "..", "root/x", &"u".repeat(33)] {
            assert!(
                with("site_user", json!(user)).is_err(),
                "site user {user:?}"
            );
        }
        for password in [
            "short",
            "has space1",
            "new\nline12",
            "nul\0nul123",
            &"p".repeat(129),
        ] {
            let error = with("site_user_password", json!(password)).unwrap_err();
            assert!(!error.to_string().contains(password), "{error}");
        }
        let user = |extra: Value| {
            let mut payload = json!({"user_name": "john.doe", "email": "john.doe@example.com",
                "first_name": "John", "last_name": "Doe", "password": "!password!",
                "role": "admin"});
            for (k, v) in extra.as_object().unwrap() {
                payload[k] = v.clone();
            }
            Action::parse("cloudpanel.user.add", payload)
        };
        assert!(user(json!({})).is_ok());
        assert!(
            user(json!({"role": "user", "sites": ["a.com", "b.io"], "timezone": "Europe/Berlin"}))
                .is_ok()
        );
        for extra in [
            json!({"role": "root"}),
            json!({"sites": ["a.com"]}),
            json!({"email": "not-an-email"}),
            json!({"email": "a@b"}),
            json!({"first_name": "-x"}),
            json!({"first_name": "a;b"}),
            json!({"user_name": "--all"}),
            json!({"timezone": "../etc/passwd"}),
            json!({"unknown": 1}),
        ] {
            assert!(user(extra.clone()).is_err(), "{extra} was accepted");
        }
        assert!(Action::parse("cloudpanel.user.delete", json!({"user_name": "-rf"})).is_err());
        assert!(
            Action::parse(
                "cloudpanel.site.delete",
                json!({"domain": "x.com", "force": false})
            )
            .is_err()
        );
    }
}
